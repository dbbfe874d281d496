"""LitE-style cell-level supernet search on the bundled digits, against hand-built conv SNNs.

One command: ``python bench/bench_lite.py`` (``--smoke``: checks the script runs). Hand-built
reference: the same stem (3x3 conv, 8-bit) and head (pool + linear, 8-bit) around a cell of
two fp32 3x3 convs in sequence (edges conv3, none, conv3), T=4; plus uniformly 8-bit and 4-bit
versions of it for comparisons at (about) equal bytes. The search gets half the reference's
deployed bytes as its budget (hinge penalty on the expected bytes), learns architecture and
timestep weights jointly with the weights, decodes, retrains; every model is then deployed with
``sparsesnn.deploy.deploy`` (packed kernels) and its *deployed* test accuracy and bytes are
reported (weights as packed + BatchNorm buffers, unfolded fp32), with accuracy under Gaussian
input noise. Writes ``bench/results/lite_digits.{json,md}``.
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


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lam-bytes", type=float, default=0.5, help="weight of the byte-budget hinge")
    p.add_argument("--name", default="lite_digits", help="results file stem")
    args = C.start(p.parse_args())
    d = load_digits()
    Cc, seed = args.channels, args.seed
    s_epochs, warmup, r_epochs = 8, 3, 20
    if args.size == "smoke":
        d.x_train, d.y_train, d.x_test, d.y_test = d.x_train[:64], d.y_train[:64], d.x_test[:32], d.y_test[:32]
        s_epochs, warmup, r_epochs = 2, 1, 1
    t_all = time.perf_counter()
    conv3, none = lite.Candidate("conv3", 32, 1.0, 3), lite.Candidate("none", 0, 0.0, 0)
    q = lambda b: lite.Candidate(f"comp{b}b_keep1", b, 1.0, 3)  # noqa: E731
    rows = [finish("hand-built fp32 cell", lite.CellNet(Cc, 8, 10, [conv3, none, conv3], 4), d, r_epochs, seed)]
    ref_bytes = rows[0]["deployed_bytes"]
    budget = ref_bytes / 2
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    res = lite.search(d.x_train, d.y_train, byte_budget=budget - bn_bytes(lite.CellNet(Cc, 8, 10, [none] * 3, 1)),
                      C=Cc, epochs=s_epochs, warmup=warmup, seed=seed, lam_bytes=args.lam_bytes)
    search_s = time.perf_counter() - t0
    print(f"search: {search_s:.0f} s, genotype {res.genotype}", flush=True)
    searched = finish("searched", lite.decode(res.supernet), d, r_epochs, seed)
    searched["search_seconds"] = search_s
    rows.append(searched)
    for b in (8, 4):
        rows.append(finish(f"hand-built {b}-bit cell", lite.CellNet(Cc, 8, 10, [q(b), none, q(b)], 4), d, r_epochs, seed))
    total_s = time.perf_counter() - t_all
    ref = rows[0]
    summary = {"reference_bytes": ref_bytes, "budget_bytes": budget, "searched_bytes": searched["deployed_bytes"],
               "bytes_ratio": searched["deployed_bytes"] / ref_bytes,
               "acc_gap_points": 100 * (ref["deployed_test_acc"] - searched["deployed_test_acc"]),
               "search_seconds": search_s, "total_seconds": total_s,
               "target_met": searched["deployed_bytes"] <= ref_bytes / 2
               and ref["deployed_test_acc"] - searched["deployed_test_acc"] <= 0.01}
    md = [f"Byte-penalty weight {args.lam_bytes}. Digits 8x8, C={Cc} channels, stem and head 8-bit in every model, seed {seed}; search "
          f"{s_epochs} epochs (arch from epoch {warmup}), retraining {r_epochs} epochs; whole command "
          f"{total_s:.0f} s (loadavg {loadavg()}).\n",
          C.markdown_table(["model", "cell ops (0->1, 0->2, 1->2)", "T", "deployed test acc", "deployed bytes",
                            "train s"] + [f"noise {s}" for s in SIGMAS],
                           [[r["model"], ", ".join(r["ops"]), r["T"], r["deployed_test_acc"], r["deployed_bytes"],
                             r["train_seconds"]] + r["noise_acc"] for r in rows]),
          f"\nSearched vs hand-built fp32 cell: {summary['bytes_ratio']:.2f} x bytes, accuracy gap "
          f"{summary['acc_gap_points']:+.1f} points (target: <= 0.5 x bytes, <= 1 point): "
          f"{'met' if summary['target_met'] else 'not met'}. Search took {search_s:.0f} s.\n",
          "Deployed bytes: packed weights and scales as `sparsesnn.metrics.report` counts them, plus "
          "BatchNorm (4 fp32 values per channel, not folded here)."]
    payload = {"lam_bytes": args.lam_bytes, "rows": rows, "summary": summary, "search_history": res.history, "genotype": res.genotype,
               "size": args.size}
    if args.size != "smoke":
        print(f"wrote {C.write_results(args.name, payload, chr(10).join(md), args.machine)}")
    print("\n".join(md))


if __name__ == "__main__":
    main()
