"""tinySNN-style quantization on digits: explore weight precision x membrane-state precision x
rounding x post/in-training, print the memory/accuracy Pareto front, pick the smallest model
within 1.5 points of dense, deploy it (quantized weights on the packed kernels, fixed-point
state in the LIF kernel).

    python examples/tinysnn_digits.py [--max-drop 0.015]
"""
import argparse

from _digits_common import dense_digits, summary

from sparsesnn.compress import evaluate
from sparsesnn.compress.tinysnn import ROUNDINGS, explore
from sparsesnn.deploy import deploy

p = argparse.ArgumentParser()
p.add_argument("--max-drop", type=float, default=0.015)
a = p.parse_args()

split, tr, te, dense = dense_digits(hidden=(256, 256))
base = evaluate(dense, te)["acc"]
ex = explore(dense, te, tr, weight_bits=(8, 4, 2), state_bits=(16, 10, 8, 6), roundings=ROUNDINGS,
             modes=("post", "in"), accuracy_constraint=base - a.max_drop, epochs=1)
print(f"{len(ex.records)} configurations; Pareto front (memory vs accuracy):")
for r in ex.front:
    print(f"  {r['label']:<28} {r['memory_bytes'] / 1024:8.1f} KiB  acc {r['acc']:.4f}")
if ex.best is None:
    print("no configuration meets the constraint")
else:
    print(f"smallest within {100 * a.max_drop:.1f} pts: {ex.best['label']}")
    summary(ex.best["label"], dense, deploy(ex.best_model), split, te)
