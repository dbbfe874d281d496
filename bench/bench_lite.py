"""LitE-style cell-level supernet search on the bundled digits, against hand-built conv SNNs.

One command: ``python bench/bench_lite.py --threads 1`` (seeds 0, 1, 2; ``--smoke``: checks the
script runs). Hand-built
reference: the same stem (3x3 conv, 8-bit) and head (pool + linear, 8-bit) around a cell of
two fp32 3x3 convs in sequence (edges conv3, none, conv3), T=4; plus uniformly 8-bit and 4-bit
versions of it for comparisons at (about) equal bytes. The search gets half the reference's
deployed bytes as a hard budget (a hinge on the expected bytes during the search, the budget
enforced at decoding), learns architecture and timestep weights on a validation split of the
training set (bilevel, first order), decodes, retrains on the whole training set for as many
epochs as the hand-built nets; every model is then deployed with ``sparsesnn.deploy.deploy``
(packed kernels) and its *deployed* test accuracy and bytes are reported (weights as packed +
BatchNorm buffers, unfolded fp32), with accuracy under Gaussian input noise. Writes ``bench/results/lite_digits.{json,md}``.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common as C  # noqa: E402
from sparsesnn.compress import lite  # noqa: E402
from sparsesnn.data import load_digits  # noqa: E402
from sparsesnn.deploy import deploy  # noqa: E402
from sparsesnn.metrics import noise_robustness, report  # noqa: E402

SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.5)


def loadavg() -> list[str]:
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return []


def bn_bytes(net: torch.nn.Module) -> int:
    return sum(16 * m.num_features for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def finish(name: str, net: lite.CellNet, d, epochs: int, seed: int) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    lite.train_net(net, d.x_train, d.y_train, epochs=epochs, seed=seed)
    train_s = time.perf_counter() - t0
    net.finalize().eval()
    dep = deploy(net)
    acc = lite.evaluate(dep, d.x_test, d.y_test)
    packed = report(dep)["total"]["bytes"]
    rob = noise_robustness(lambda z: dep(z), d.x_test, d.y_test, SIGMAS, seed=0)["accuracy"]
    rec = {"model": name, "ops": [c.name for c in net.ops], "T": net.T, "float_test_acc": lite.evaluate(net, d.x_test, d.y_test),
           "deployed_test_acc": acc, "packed_weight_bytes": packed, "bn_bytes": bn_bytes(net),
           "deployed_bytes": packed + bn_bytes(net), "train_seconds": train_s, "noise_acc": rob,
           "loadavg": loadavg()}
    print(f"{name}: ops {rec['ops']} T={net.T} deployed acc {acc:.3f} bytes {rec['deployed_bytes']} "
          f"(train {train_s:.0f} s, loadavg {rec['loadavg']})", flush=True)
    return rec


def run_seed(d, Cc: int, seed: int, s_epochs: int, warmup: int, r_epochs: int, lam_bytes: float) -> tuple[list[dict], dict]:
    """Hand-built fp32 cell, the search (budget: half its deployed bytes), the decoded and
    retrained net, and the 8-/4-bit hand-built cells, all for one seed."""
    conv3, none = lite.Candidate("conv3", 32, 1.0, 3), lite.Candidate("none", 0, 0.0, 0)
    q = lambda b: lite.Candidate(f"comp{b}b_keep1", b, 1.0, 3)  # noqa: E731
    rows = [finish("hand-built fp32 cell", lite.CellNet(Cc, 8, 10, [conv3, none, conv3], 4), d, r_epochs, seed)]
    budget = rows[0]["deployed_bytes"] / 2
    t0 = time.perf_counter()
    res = lite.search(d.x_train, d.y_train, byte_budget=budget, C=Cc, epochs=s_epochs, warmup=warmup, seed=seed,
                      lam_bytes=lam_bytes)
    search_s = time.perf_counter() - t0
    print(f"search (seed {seed}): {search_s:.0f} s, genotype {res.genotype}, last val acc "
          f"{res.history[-1]['val_acc']:.3f} (loadavg {loadavg()})", flush=True)
    searched = finish("searched", lite.decode(res.supernet, genotype=res.genotype), d, r_epochs, seed)
    searched["search_seconds"] = search_s
    rows.append(searched)
    for b in (8, 4):
        rows.append(finish(f"hand-built {b}-bit cell", lite.CellNet(Cc, 8, 10, [q(b), none, q(b)], 4), d, r_epochs, seed))
    for r in rows:
        r["seed"] = seed
    return rows, {"seed": seed, "budget_bytes": budget, "search_seconds": search_s, "genotype": res.genotype,
                  "settings_scored_on_validation": res.candidates, "history": res.history}


def mean_std(v: list[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    return m, (sum((a - m) ** 2 for a in v) / max(len(v) - 1, 1)) ** 0.5


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (each: search + every model)")
    p.add_argument("--lam-bytes", type=float, default=1.0, help="weight of the byte-budget hinge in the search")
    p.add_argument("--name", default="lite_digits", help="results file stem")
    args = C.start(p.parse_args())
    d = load_digits()
    Cc, seeds = args.channels, [int(s) for s in args.seeds.split(",")]
    s_epochs, warmup, r_epochs = 8, 2, 20
    if args.size == "smoke":
        d.x_train, d.y_train, d.x_test, d.y_test = d.x_train[:64], d.y_train[:64], d.x_test[:32], d.y_test[:32]
        s_epochs, warmup, r_epochs, seeds = 2, 1, 1, seeds[:1]
    t_all = time.perf_counter()
    rows, searches = [], []
    for seed in seeds:
        r, s = run_seed(d, Cc, seed, s_epochs, warmup, r_epochs, args.lam_bytes)
        rows += r
        searches.append(s)
    total_s = time.perf_counter() - t_all
    names = list(dict.fromkeys(r["model"] for r in rows))
    by = {n: [r for r in rows if r["model"] == n] for n in names}
    ref_acc = mean_std([r["deployed_test_acc"] for r in by["hand-built fp32 cell"]])[0]
    ref_bytes = by["hand-built fp32 cell"][0]["deployed_bytes"]
    found = by["searched"]
    s_acc = mean_std([r["deployed_test_acc"] for r in found])[0]
    worst_ratio = max(r["deployed_bytes"] for r in found) / ref_bytes
    summary = {"seeds": seeds, "reference_bytes": ref_bytes, "budget_bytes": ref_bytes / 2,
               "searched_bytes": [r["deployed_bytes"] for r in found], "max_bytes_ratio": worst_ratio,
               "reference_acc_mean": ref_acc, "searched_acc_mean": s_acc, "acc_gap_points": 100 * (ref_acc - s_acc),
               "search_seconds": [s["search_seconds"] for s in searches], "total_seconds": total_s,
               "target_met": worst_ratio <= 0.5 and ref_acc - s_acc <= 0.01}
    table = []
    for n in names:
        accs = [r["deployed_test_acc"] for r in by[n]]
        m, sd = mean_std(accs)
        noise = [mean_std([r["noise_acc"][k] for r in by[n]])[0] for k in range(len(SIGMAS))]
        table.append([n, "; ".join(f"{', '.join(r['ops'])} T={r['T']}" for r in by[n]) if n == "searched"
                      else f"{', '.join(by[n][0]['ops'])} T={by[n][0]['T']}",
                      f"{m:.3f} ± {sd:.3f}", " / ".join(f"{a:.3f}" for a in accs),
                      " / ".join(str(r["deployed_bytes"]) for r in by[n]) if n == "searched" else by[n][0]["deployed_bytes"],
                      f"{sum(r['train_seconds'] for r in by[n]) / len(by[n]):.0f}"] + [f"{a:.3f}" for a in noise])
    md = [f"Search: bilevel (weights on 75% of the training set, architecture and timestep weights on the other 25%), "
          f"{s_epochs} epochs (architecture from epoch {warmup}), byte hinge weight {args.lam_bytes}, decoded under the hard "
          f"budget of half the hand-built fp32 cell's deployed bytes ({ref_bytes / 2:.0f} B), CompConv settings chosen by the "
          f"supernet's validation accuracy. Every model retrained "
          f"{r_epochs} epochs on the whole training set; test set used once per model, after deployment. Digits 8x8, C={Cc} "
          f"channels, stem and head 8-bit in every model; seeds {seeds}; whole command {total_s:.0f} s (loadavg {loadavg()}).\n",
          C.markdown_table(["model", "cell ops (0->1, 0->2, 1->2), T", "deployed test acc (mean ± sd)", "per seed",
                            "deployed bytes", "train s"] + [f"noise {s}" for s in SIGMAS], table),
          f"\nSearched vs hand-built fp32 cell (means over seeds): {100 * s_acc:.1f} vs {100 * ref_acc:.1f} "
          f"({summary['acc_gap_points']:+.1f} points gap) at <= {worst_ratio:.2f} x bytes (target: <= 0.5 x bytes, "
          f"<= 1 point): {'met' if summary['target_met'] else 'not met'}. Search seconds per seed: "
          f"{', '.join(f'{s:.0f}' for s in summary['search_seconds'])}.\n",
          "Deployed bytes: packed weights and scales as `sparsesnn.metrics.report` counts them, plus "
          "BatchNorm (4 fp32 values per channel, not folded here). Noise columns: mean deployed accuracy over seeds."]
    payload = {"lam_bytes": args.lam_bytes, "rows": rows, "summary": summary, "searches": searches, "size": args.size}
    if args.size != "smoke":
        print(f"wrote {C.write_results(args.name, payload, chr(10).join(md), args.machine)}")
    print("\n".join(md))


if __name__ == "__main__":
    main()
