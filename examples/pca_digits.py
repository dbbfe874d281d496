"""Spatial (PCA) pruning on digits: shrink the hidden layers to the principal components that
explain 99.9% of the average accumulated membrane potential, fine-tune, deploy.

    python examples/pca_digits.py [--variance 0.999] [--epochs 3]
"""
import argparse

from _digits_common import dense_digits, summary

from sparsesnn.compress.pca import pca_prune
from sparsesnn.deploy import deploy

p = argparse.ArgumentParser()
p.add_argument("--variance", type=float, default=0.999)
p.add_argument("--epochs", type=int, default=3)
a = p.parse_args()

split, tr, te, dense = dense_digits()
import copy  # noqa: E402

model = copy.deepcopy(dense)
res = pca_prune(model, tr, tr, variance=a.variance, epochs=a.epochs)
print("widths:", res.summary())
summary(f"PCA {a.variance}", dense, deploy(model), split, te)
