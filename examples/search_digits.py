"""LitE-SNN-style joint search on digits: per-layer bit width (8/4/2) and pruning threshold and
the number of time steps (2/3/4), learned jointly under a hard budget of 3% of the dense fp32
weight bits (+ a bit-SynOps penalty); decode, fine-tune, deploy.

    python examples/search_digits.py [--budget 0.03]
"""
import argparse
import copy

from _digits_common import dense_digits, summary

from sparsesnn.compress.search import lite_search
from sparsesnn.deploy import deploy

p = argparse.ArgumentParser()
p.add_argument("--budget", type=float, default=0.03)
p.add_argument("--epochs", type=int, default=3)
a = p.parse_args()

split, tr, te, dense = dense_digits()
model = copy.deepcopy(dense)
cfg, _ = lite_search(model, tr, epochs=a.epochs, finetune_epochs=3, T_candidates=(2, 3, 4),
                     budget=a.budget, lam_ops=0.05)
print(f"decoded: T={cfg.T}, model bits {100 * cfg.bits_fraction:.2f}% of fp32 (budget {100 * a.budget:.1f}%)")
for n, c in cfg.layers.items():
    print(f"  {n}: {c['bits']} bits, sparsity {100 * c['sparsity']:.1f}%")
summary("LitE search", dense, deploy(model), split, te)
