"""Temporal pruning on digits: fine-tune while reducing T (8 -> 6 -> 4 -> 3 -> 2 -> 1) until
the accuracy drops more than 2 points, sweep the weight precision (8, 6, 5, 4, 3, 2 bits) of the
pruned model, then deploy the model at the reduced T.

    python examples/temporal_digits.py [--T 8] [--tolerance 0.02]
"""
import argparse
import copy

from _digits_common import dense_digits, summary

from sparsesnn.compress.temporal import precision_sweep, temporal_prune
from sparsesnn.deploy import deploy

p = argparse.ArgumentParser()
p.add_argument("--T", type=int, default=8)
p.add_argument("--tolerance", type=float, default=0.02)
p.add_argument("--epochs-per-step", type=int, default=2)
a = p.parse_args()

split, tr, te, dense = dense_digits(T=a.T)
model = copy.deepcopy(dense)
sched = [t for t in (6, 4, 3, 2, 1) if t < a.T]
res = temporal_prune(model, tr, te, schedule=sched, epochs_per_step=a.epochs_per_step,
                     tolerance=a.tolerance)
print(f"T {res.T_start} -> {res.T_final} (stopped: {res.stopped}); tried:",
      ", ".join(f"T={h['T']}: {h['acc']:.4f}{'' if h['accepted'] else ' (undone)'}" for h in res.history))
print("post-training weight precision on the pruned model:",
      ", ".join(f"{r['bits']}b: {r['acc']:.4f}" for r in precision_sweep(model, te)))
summary(f"temporal T={res.T_final}", dense, deploy(model), split, te)
