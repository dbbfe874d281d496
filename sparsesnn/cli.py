"""Command line: ``sparsesnn demo`` (train -> compress -> deploy -> measure) and ``sparsesnn info``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence



def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run, table_markdown
    from .demo_conv import CONV_EPOCHS

    out = args.out or ("results/demo_conv" if args.model == "conv" else "results/demo")
    cfg = DemoConfig(data=args.data, model=args.model, path=args.path, out=out, T=args.T, seed=args.seed,
                     bits=int(args.bits) if str(args.bits).isdigit() else args.bits,
                     activity=args.activity, threads=args.threads, progress=not args.no_progress,
                     ablate_activity=not args.no_ablation)
    if args.hidden:
        cfg.hidden = cfg.conv_hidden = tuple(args.hidden)
        # same rule as the default: prune the hidden-to-hidden layers only
        n = len(cfg.hidden) + 1
        cfg.sparsity = {f"fc{i + 1}": (0.95 if 0 < i < n - 1 else 0.0) for i in range(n)}
    if args.model == "conv":  # converges in fewer epochs; keeps the conv demo within 5 minutes
        cfg.epochs = cfg.admm_epochs = cfg.retrain_epochs = CONV_EPOCHS
    if args.quick:  # tiny settings for smoke tests: seconds, not minutes; numbers not meaningful
        cfg.quick = True
        cfg.hidden = tuple(args.hidden) if args.hidden else (128, 128)
        cfg.conv, cfg.conv_hidden = (8, "M", 16, "M"), tuple(args.hidden) if args.hidden else (32,)
        cfg.epochs, cfg.admm_epochs, cfg.retrain_epochs = 1, 1, 1
        cfg.latency_runs = 20
    if args.epochs is not None:
        cfg.epochs = cfg.admm_epochs = cfg.retrain_epochs = args.epochs
    if args.sparsity is not None:
        cfg.sparsity = {k: args.sparsity for k in cfg.sparsity}
        cfg.conv_sparsity = args.sparsity
    cfg.validate()  # every argument checked before any data is loaded or trained
    res = run(cfg)
    print()
    print(table_markdown(res))
    agree = res["deployed_vs_float"]["prediction_agreement"]
    print(f"\nDeployed model agrees with the fake-quantized float model on {100 * agree:.2f}% of "
          f"test predictions. Energy figures are estimates (0.9 pJ/AC, 4.6 pJ/MAC); latencies are "
          f"measured. Wrote {cfg.out}/demo.json, demo.md, demo.png ({res['seconds']:.0f} s).")
    return 0


def _info(args: argparse.Namespace) -> int:
    import sparsesnn

    print(json.dumps({"version": sparsesnn.__version__, **sparsesnn.info()}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsesnn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train, compress (ADMM prune + quantize + activity reg.), "
                                    "deploy and measure on digits or MNIST")
    d.add_argument("--data", choices=("digits", "mnist"), default="digits")
    d.add_argument("--path", default=None, help="directory with MNIST IDX files (--data mnist)")
    d.add_argument("--model", choices=("mlp", "conv"), default="mlp",
                   help="mlp: wide spiking MLP; conv: small VGG-style conv SNN with BatchNorm")
    d.add_argument("--out", default=None,
                   help="output directory (JSON, Markdown, PNG; default results/demo or results/demo_conv)")
    d.add_argument("--epochs", type=int, default=None, help="epochs for each phase (default 8/8/8; conv 6/6/6)")
    d.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="hidden widths (default 2048 2048; conv: fully connected widths, default 256)")
    d.add_argument("--T", type=int, default=4, help="timesteps")
    d.add_argument("--bits", default="4", help="weight format: 8, 6, 5, 4, 3, 2, ternary, binary (3/5/6-bit grids in int4/int8 containers)")
    d.add_argument("--sparsity", type=float, default=None, help="one sparsity for every layer")
    d.add_argument("--activity", type=float, default=0.3, help="activity regularization weight")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    d.add_argument("--quick", action="store_true", help="tiny model and 1 epoch (smoke test)")
    d.add_argument("--no-ablation", action="store_true",
                   help="skip the second compression run without activity regularization "
                        "(the ablation that isolates its spike reduction)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)
    i = sub.add_parser("info", help="what was built: extension, CPU ISA, threads, CUDA")
    i.set_defaults(func=_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"sparsesnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
