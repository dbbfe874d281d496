"""Resource-constrained minimax pruning on digits: keep at most 10% of the weights after the
first layer (learned global pruned count, proximal shrinking, hard mask every step, dual ascent
on the budget, staged budgets 0.25 -> 0.16 -> 0.1 with keep-best fine-tuning), then deploy on
the pruned event-driven kernels.

    python examples/minimax_digits.py [--budget 0.1]
"""
import argparse
import copy

from _digits_common import dense_digits, summary

from sparsesnn.compress.minimax import minimax_prune
from sparsesnn.deploy import deploy

p = argparse.ArgumentParser()
p.add_argument("--budget", type=float, default=0.1)
p.add_argument("--epochs", type=int, default=1, help="search epochs per stage")
p.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs per stage")
a = p.parse_args()

split, tr, te, dense = dense_digits()
model = copy.deepcopy(dense)
pr = minimax_prune(model, tr, a.budget, epochs=a.epochs, finetune_epochs=a.finetune_epochs,
                   val_loader=te)  # a real study selects on a validation split (bench/compare_methods.py)
h = pr.history
print(f"kept fraction {pr.kept_fraction():.4f} (budget {a.budget}); p/y over the search:",
      ", ".join(f"{r['p']:.2f}/{r['y']:.2f}" for r in h[:: max(len(h) // 8, 1)]))
summary(f"minimax {a.budget}", dense, deploy(model), split, te)
