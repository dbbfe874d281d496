"""Unsupervised STDP (Diehl & Cook-style) on the bundled digits, and tinySNN on its setting.

One command: ``python bench/bench_stdp.py`` (``--quick``: fewer settings, ``--smoke``: checks
the script runs). It trains the fp32 network with three seeds (test accuracy, training time),
then explores weight precision x rounding x scheme (post-training / in-training quantization,
neuron parameters at 8 bits) and picks the smallest model whose *validation* accuracy is
within 1 point of the fp32 network's (labels are assigned on the first 80% of the training
split, selection uses the last 20%, test accuracy is reported), with memory and energy of
training and inference; last, accuracy under Gaussian input noise (a sigma sweep,
``sparsesnn.metrics.noise_robustness``) for the fp32 network and the compressed ones.
Writes ``bench/results/stdp_digits.{json,md}``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common as C  # noqa: E402
from sparsesnn.data import load_digits  # noqa: E402
from sparsesnn.metrics import noise_robustness  # noqa: E402
from sparsesnn.stdp import STDPConfig, predict  # noqa: E402
from sparsesnn.stdp import quant as Q  # noqa: E402

SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.5)


def loadavg() -> str:
    try:
        return open("/proc/loadavg").read().split(" ")[0:3].__str__()
    except OSError:
        return "n/a"


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--n-exc", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = C.start(p.parse_args())
    d = load_digits()
    n_assign = int(0.8 * d.x_train.shape[0])
    assign = (d.x_train[:n_assign], d.y_train[:n_assign])
    val = (d.x_train[n_assign:], d.y_train[n_assign:])
    test = (d.x_test, d.y_test)
    x_fit = d.x_train
    config = STDPConfig(n_exc=args.n_exc)
    bits, roundings = (8, 6, 4, 3, 2), ("truncate", "nearest", "stochastic")
    if args.size == "quick":
        bits = (8, 4, 2)
    if args.size == "smoke":
        config = STDPConfig(n_exc=20, T=16)
        x_fit, bits, args.seeds = d.x_train[:40], (8, 2), args.seeds[:1]
    print(f"loadavg before: {loadavg()}", flush=True)

    seeds = []
    nets = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        net = Q.train(x_fit, config, seed=seed)
        train_s = time.perf_counter() - t0
        net.assign(*assign)
        rec = {"seed": seed, "train_seconds": train_s, "test_acc": net.accuracy(*test),
               "val_acc": net.accuracy(*val, seed=4), "loadavg": loadavg()}
        seeds.append(rec)
        nets[seed] = net
        print(f"fp32 seed {seed}: test {rec['test_acc']:.3f} val {rec['val_acc']:.3f} "
              f"train {train_s:.1f} s (loadavg {rec['loadavg']})", flush=True)
    accs = torch.tensor([r["test_acc"] for r in seeds])
    t0 = time.perf_counter()
    ex = Q.explore(nets[args.seeds[0]], x_fit, assign, val, test, weight_bits=bits, param_bits=8,
                   roundings=roundings, progress=True)
    explore_s = time.perf_counter() - t0

    # robustness: fp32 against every compressed network on the same noise draw
    def rob(net):
        return noise_robustness(lambda z: predict(net.responses(z, seed=2), net.labels, 10),
                                d.x_test, d.y_test, SIGMAS, seed=0)["accuracy"]
    fp32 = nets[args.seeds[0]]
    fp32.assign(*assign)
    robust = [{"model": "fp32", "accuracy": rob(fp32)}]
    for r, net in zip(ex["records"], ex["models"]):
        if not (r is ex["best"] or (r["rounding"] == "stochastic" and r["weight_bits"] in (8, 4))):
            continue
        net.assign(*assign)
        robust.append({"model": f"{r['scheme']} w{r['weight_bits']} p{r['param_bits']} {r['rounding']}",
                       "accuracy": rob(net)})
    print(f"loadavg after: {loadavg()}", flush=True)

    best = ex["best"]
    base = ex["fp32"]
    summary = {"fp32_test_acc_mean": float(accs.mean()), "fp32_test_acc_std": float(accs.std()) if len(accs) > 1 else 0.0,
               "best": best, "fp32_memory_bytes": base["memory_bytes"],
               "memory_ratio": best["memory_bytes"] / base["memory_bytes"] if best else None,
               "test_drop_points": 100 * (base["test_acc"] - best["test_acc"]) if best else None,
               "explore_seconds": explore_s}
    ex.pop("models")
    payload = {"config": asdict(config), "seeds": seeds, "explore": ex, "robustness": {"sigmas": SIGMAS, "rows": robust},
               "summary": summary, "size": args.size}
    md = [f"Diehl & Cook-style network, {config.n_exc} excitatory neurons, T={config.T}, digits 8x8 "
          f"(train {x_fit.shape[0]}, test {d.x_test.shape[0]}). loadavg before/after in the JSON.\n",
          "## fp32 STDP network, 3 seeds\n",
          C.markdown_table(["seed", "test acc", "val acc", "train s", "loadavg"],
                           [[r["seed"], r["test_acc"], r["val_acc"], r["train_seconds"], r["loadavg"]] for r in seeds]),
          f"\nmean test accuracy {summary['fp32_test_acc_mean']:.3f} +- {summary['fp32_test_acc_std']:.3f}\n",
          "## tinySNN exploration (seed %d; neuron parameters 8-bit fixed point)\n" % args.seeds[0],
          C.markdown_table(["scheme", "w bits", "rounding", "val acc", "test acc", "param bytes",
                            "train mem B", "infer mem B", "train uJ/sample", "infer uJ/sample"],
                           [[r["scheme"], r["weight_bits"], r["rounding"], r["val_acc"], r["test_acc"],
                             r["memory_bytes"], r["train_memory_bytes"], r["infer_memory_bytes"],
                             r["train_energy_uj_per_sample"], r["infer_energy_uj_per_sample"]]
                            for r in [base] + ex["records"]]),
          "\n" + (f"Smallest model within 1 point of fp32 on validation: {best['scheme']} w{best['weight_bits']} "
                  f"{best['rounding']}, {best['memory_bytes']} B = {summary['memory_ratio']:.3f} x fp32 "
                  f"({base['memory_bytes']} B); test {best['test_acc']:.3f} vs fp32 {base['test_acc']:.3f} "
                  f"({-summary['test_drop_points']:+.1f} points)." if best else
                  "No quantized model met the accuracy constraint."),
          f"\nEnergy: {ex['energy_note']}; see sparsesnn/stdp/quant.py for what is counted.\n",
          "## Accuracy under Gaussian input noise (test set)\n",
          C.markdown_table(["model"] + [f"sigma {s}" for s in SIGMAS],
                           [[r["model"]] + r["accuracy"] for r in robust])]
    if args.size != "smoke":
        out = C.write_results("stdp_digits", payload, "\n".join(md), args.machine)
        print(f"wrote {out}")
    print("\n".join(md))


if __name__ == "__main__":
    main()
