"""Packed low-bit / pruned weights: memory and time against fp32 baselines, in one run.

For each format (int8, int4, int2, ternary, binary, and pruned variants) and layer size:
  * bytes: real ``model_bytes()`` of the packed layer vs the fp32 layer (weight + bias);
  * time of the packed event-driven kernel vs (a) the fp32 event-driven kernel over
    input-major fp32 weights (same kernel structure, ``PackedSpikingLinear`` without a spec,
    plus ``sparsesnn.functional.spike_linear`` when that op exists), (b) torch dense fp32
    ``F.linear`` (MKL) and (c) ``torch.sparse.mm`` with the spikes as a CSR matrix,
    at batch 1 streaming (one timestep per call), batch 1 with T steps in one call, and
    batches 8 and 32, over spike densities 1-50%;
  * analog input through the dense-path packed kernel vs torch dense;
  * the density where the dense-path kernel would overtake the event kernel (dispatch).
Every call of a configuration gets a different spike pattern (a pool of inputs is cycled) so
the active weight rows are not all cache-resident from the previous call.

Run: ``PYTHONPATH=. python bench/bench_packed.py [--quick] [--threads N]``
Writes ``bench/results/packed.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as bc  # noqa: E402

import sparsesnn  # noqa: E402
from sparsesnn.nn import PackedSpikingLinear  # noqa: E402
from sparsesnn.ops.packed_linear import packed_linear_op  # noqa: E402
from sparsesnn.ops.pruned_linear import pruned_linear_op  # noqa: E402
from sparsesnn.quant import QuantSpec  # noqa: E402

FORMATS = ["int8", "int4", "int2", "ternary", "binary"]
POOL = 8  # distinct inputs cycled per configuration
MIN_TIME = 0.02  # seconds per timing sample (short calls are looped)
T_STEPS = 16


def kernel_fn(m: PackedSpikingLinear, spike: bool = True):
    """The layer's kernel call on a prepared fp32 [M, K] input (module checks excluded)."""
    if m.layout == "pruned":
        return lambda x: pruned_linear_op(x, m.row_ptr, m.index, m.values, m.scale, m.bias, m.bits,
                                          m.out_features, m.group_size, spike)
    return lambda x: packed_linear_op(x, m.weights, m.scale, m.bias, m.bits, m.out_features,
                                      m.group_size, spike)


def cycling(fn, inputs):
    it = itertools.cycle(inputs)
    return lambda: fn(next(it))


def build_layers(K: int, N: int, prune_keep: float):
    torch.manual_seed(0)
    lin = torch.nn.Linear(K, N)
    layers = {"fp32 event": PackedSpikingLinear.from_float(lin, None)}
    for f in FORMATS:
        layers[f] = PackedSpikingLinear.from_float(lin, QuantSpec(f))
    # Magnitude pruning to `prune_keep` of the weights, compressed rows by input neuron.
    thr = lin.weight.detach().abs().flatten().kthvalue(int((1 - prune_keep) * K * N)).values
    mask = lin.weight.detach().abs() > thr
    tag = f"prune{round((1 - prune_keep) * 100)}"
    layers[f"fp32+{tag}"] = PackedSpikingLinear.from_float(lin, None, mask=mask)
    layers[f"int4+{tag}"] = PackedSpikingLinear.from_float(lin, QuantSpec(4), mask=mask)
    return lin, layers


def spike_linear_baseline(W, b):
    """The float event-driven kernel ``sparsesnn::spike_linear`` (with its cached input-major
    weight, as ``SpikingLinear`` uses it), when this build has it."""
    try:
        from sparsesnn.ops.spike_linear import spike_linear_op
    except ImportError:
        return None
    Wt = W.t().contiguous()
    return lambda x: spike_linear_op(x, W, Wt, b)


def run_size(K: int, N: int, densities, batches, repeats: int, prune_keep: float):
    lin, layers = build_layers(K, N, prune_keep)
    W, b = lin.weight.detach().contiguous(), lin.bias.detach()
    Wt = W.t().contiguous()
    fp32_bytes = (W.numel() + b.numel()) * 4
    sizes = {name: {"bytes": m.model_bytes(), "ratio_vs_fp32": fp32_bytes / m.model_bytes()}
             for name, m in layers.items()}
    peer = spike_linear_baseline(W, b)
    rows = []
    g = torch.Generator().manual_seed(1)
    for density in densities:
        for mode in ["stream"] + [f"T{T_STEPS}x1"] + [f"B{bb}" for bb in batches]:
            M = 1 if mode == "stream" else (T_STEPS if mode.startswith("T") else int(mode[1:]))
            steps = T_STEPS if mode == "stream" else 1
            pool = [(torch.rand(M, K, generator=g) < density).float() for _ in range(POOL * steps)]

            def timed(fn):
                if steps == 1:
                    return bc.timeit(cycling(fn, pool), repeat=repeats, warmup=2, min_time=MIN_TIME)
                groups = [pool[i * steps:(i + 1) * steps] for i in range(POOL)]

                def run_group(xs):
                    for x in xs:
                        fn(x)
                return bc.timeit(cycling(run_group, groups), repeat=repeats, warmup=1, min_time=MIN_TIME) / steps

            rec = {"K": K, "N": N, "density": density, "mode": mode, "rows_per_call": M,
                   "per": "timestep" if mode != f"B{M}" or mode.startswith("T") else "call"}
            rec["torch_dense_s"] = timed(lambda x: F.linear(x, W, b))
            rec["torch_sparse_s"] = timed(lambda x: torch.addmm(b, x.to_sparse_csr(), Wt)
                                          if x.shape[0] > 0 else None)
            if peer is not None:
                try:
                    rec["spike_linear_s"] = timed(peer)
                except Exception as exc:  # the peer op's signature may differ
                    rec["spike_linear_error"] = repr(exc)
            for name, m in layers.items():
                rec[f"{name}_s"] = timed(kernel_fn(m, True))
            if mode.startswith("T"):
                for key in [k for k in rec if k.endswith("_s")]:
                    rec[key] /= M  # per timestep
            rows.append(rec)
            sl = f"  spike_linear {rec['spike_linear_s']*1e3:7.3f}" if "spike_linear_s" in rec else ""
            print(f"K=N={K} d={density:.2f} {mode:>6}: dense {rec['torch_dense_s']*1e3:8.3f} ms  "
                  f"fp32ev {rec['fp32 event_s']*1e3:7.3f}{sl}  int4 {rec['int4_s']*1e3:7.3f}  "
                  f"int4/fp32ev x{rec['fp32 event_s']/rec['int4_s']:.2f}  "
                  f"int4/dense x{rec['torch_dense_s']/rec['int4_s']:.1f}", flush=True)
    # Analog input (dense-path packed kernel) and the spike-vs-dense-path crossover.
    analog, cross = [], []
    xa = [torch.randn(8, K, generator=g) for _ in range(POOL)]
    rec = {"K": K, "N": N, "batch": 8, "torch_dense_s": bc.timeit(cycling(lambda x: F.linear(x, W, b), xa), repeat=repeats, min_time=MIN_TIME)}
    for name in ["fp32 event"] + FORMATS:
        rec[f"{name}_s"] = bc.timeit(cycling(kernel_fn(layers[name], False), xa), repeat=repeats, min_time=MIN_TIME)
    analog.append(rec)
    for density in [0.05, 0.2, 0.5, 0.8, 1.0]:
        xs = [(torch.rand(8, K, generator=g) < density).float() for _ in range(POOL)]
        m = layers["int4"]
        cross.append({"K": K, "N": N, "batch": 8, "density": density,
                      "event_int_s": bc.timeit(cycling(kernel_fn(m, True), xs), repeat=repeats, min_time=MIN_TIME),
                      "dense_path_s": bc.timeit(cycling(kernel_fn(m, False), xs), repeat=repeats, min_time=MIN_TIME),
                      "torch_dense_s": bc.timeit(cycling(lambda x: F.linear(x, W, b), xs), repeat=repeats, min_time=MIN_TIME)})
    return {"K": K, "N": N, "fp32_bytes": fp32_bytes, "sizes": sizes, "timings": rows,
            "analog": analog, "crossover": cross}


def run_conv(repeats: int, densities) -> list[dict]:
    """Event-driven packed conv2d (128 -> 128, 3x3, 32x32) vs the fp32 version of the same
    kernel and torch dense ``F.conv2d`` (oneDNN)."""
    from sparsesnn.nn import PackedSpikingConv2d
    from sparsesnn.ops.packed_conv2d import packed_conv2d_op

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    layers = {"fp32 event": PackedSpikingConv2d.from_float(conv, None)}
    for f in FORMATS:
        layers[f] = PackedSpikingConv2d.from_float(conv, QuantSpec(f))
    W, b = conv.weight.detach(), conv.bias.detach()
    g = torch.Generator().manual_seed(2)
    out = []
    for batch in (1, 8):
        for density in densities:
            xs = [(torch.rand(batch, 128, 32, 32, generator=g) < density).float() for _ in range(POOL)]
            rec = {"batch": batch, "density": density,
                   "torch_dense_s": bc.timeit(cycling(lambda x: F.conv2d(x, W, b, 1, 1), xs), repeat=repeats, min_time=MIN_TIME)}
            for name, m in layers.items():
                fn = (lambda m: lambda x: packed_conv2d_op(x, m.weights, m.scale, m.bias, m.bits, 128, [3, 3], [1, 1],
                                                           [1, 1], [1, 1], m.group_size, True))(m)
                rec[f"{name}_s"] = bc.timeit(cycling(fn, xs), repeat=repeats, min_time=MIN_TIME)
                rec[f"{name}_bytes"] = m.model_bytes()
            out.append(rec)
            print(f"conv B={batch} d={density:.2f}: dense {rec['torch_dense_s']*1e3:.3f} ms  fp32ev "
                  f"{rec['fp32 event_s']*1e3:.3f}  int4 {rec['int4_s']*1e3:.3f}", flush=True)
    return out


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def markdown(res: dict) -> str:
    out = ["Packed low-bit / pruned weights. Load average at start "
           f"{res['load_average']}; copy bandwidth measured in this run: "
           f"{res['copy_bandwidth_GBs']:.1f} GB/s.", "",
           "Times are medians; `stream` = batch 1, one timestep per call (time per step); "
           f"`T{T_STEPS}x1` = {T_STEPS} timesteps of batch 1 in one call (time per step); `B8`/`B32` = one call. "
           "`fp32 event` is the fp32 event-driven kernel over input-major fp32 weights (same "
           "kernel structure as the packed ones); `torch dense` is `F.linear` (MKL); `torch.sparse` "
           "is `addmm` with the spikes as CSR. Speedups are baseline time / packed time.", ""]
    for size in res["sizes"]:
        K = size["K"]
        out += [f"## K = N = {K} (fp32 weights {size['fp32_bytes'] / 2**20:.1f} MiB)", "", "### Bytes", ""]
        out.append(bc.markdown_table(["format", "bytes", "x smaller than fp32"],
                               [[n, v["bytes"], f"{v['ratio_vs_fp32']:.2f}"] for n, v in size["sizes"].items()]))
        names = [n for n in size["sizes"] if n != "fp32 event"]
        out += ["", "### Event-driven time (ms) and speedup of each format vs fp32 event / torch dense", ""]
        hdr = ["density", "mode", "torch dense", "torch.sparse", "fp32 event"]
        if any("spike_linear_s" in r for r in size["timings"]):
            hdr.append("spike_linear")
        hdr += [f"{n}" for n in names]
        rows = []
        for r in size["timings"]:
            row = [f"{r['density']:.0%}", r["mode"], fmt_ms(r["torch_dense_s"]), fmt_ms(r["torch_sparse_s"]),
                   fmt_ms(r["fp32 event_s"])]
            if "spike_linear" in hdr:
                row.append(fmt_ms(r["spike_linear_s"]) if "spike_linear_s" in r else "-")
            for n in names:
                t = r[f"{n}_s"]
                row.append(f"{fmt_ms(t)} (x{r['fp32 event_s'] / t:.1f} / x{r['torch_dense_s'] / t:.0f})")
            rows.append(row)
        out.append(bc.markdown_table(hdr, rows))
        out += ["", "### Analog input (dense-path packed kernel), batch 8 (ms)", ""]
        a = size["analog"][0]
        out.append(bc.markdown_table(["torch dense", "fp32 (input-major)"] + FORMATS,
                               [[fmt_ms(a["torch_dense_s"]), fmt_ms(a["fp32 event_s"])] + [fmt_ms(a[f"{f}_s"]) for f in FORMATS]]))
        out += ["", "### int4, batch 8: event (integer) kernel vs dense-path kernel over density (ms)", ""]
        out.append(bc.markdown_table(["density", "event int", "dense path", "torch dense"],
                               [[f"{c['density']:.0%}", fmt_ms(c["event_int_s"]), fmt_ms(c["dense_path_s"]),
                                 fmt_ms(c["torch_dense_s"])] for c in size["crossover"]]))
        out.append("")
    if res.get("conv"):
        out += ["## Conv2d 128 -> 128, 3x3, 32x32, binary spikes (ms; speedup vs fp32 event / torch dense)", ""]
        names = ["fp32 event"] + FORMATS
        c0 = res["conv"][0]
        out.append("Bytes: " + ", ".join(f"{n} {c0[f'{n}_bytes']}" for n in names) + "")
        out.append("")
        rows = []
        for c in res["conv"]:
            rows.append([c["batch"], f"{c['density']:.0%}", fmt_ms(c["torch_dense_s"])] +
                        [f"{fmt_ms(c[f'{n}_s'])} (x{c['fp32 event_s'] / c[f'{n}_s']:.1f} / x{c['torch_dense_s'] / c[f'{n}_s']:.1f})"
                         for n in names])
        out.append(bc.markdown_table(["batch", "density", "torch dense"] + names, rows))
        out.append("")
    out += ["## Targets (int4, K = N = 4096, 5% density)", ""]
    out.append(bc.markdown_table(["check", "measured", "target", "met"], res["targets"]))
    return "\n".join(out) + "\n"


def targets(res: dict) -> list[list]:
    rows = []
    for size in res["sizes"]:
        if size["K"] != 4096:
            continue
        ratio = size["sizes"]["int4"]["ratio_vs_fp32"]
        rows.append(["int4 bytes vs fp32", f"x{ratio:.2f}", ">= 7", ratio >= 7])
        for r in size["timings"]:
            if abs(r["density"] - 0.05) > 1e-9:
                continue
            s_ev = r["fp32 event_s"] / r["int4_s"]
            s_dn = r["torch_dense_s"] / r["int4_s"]
            rows.append([f"int4 vs fp32 event, {r['mode']}", f"x{s_ev:.2f}", ">= 2", s_ev >= 2])
            rows.append([f"int4 vs torch dense, {r['mode']}", f"x{s_dn:.1f}", ">= 8", s_dn >= 8])
            if "spike_linear_s" in r:
                s_sl = r["spike_linear_s"] / r["int4_s"]
                rows.append([f"int4 vs spike_linear (fp32 event), {r['mode']}", f"x{s_sl:.2f}", ">= 2", s_sl >= 2])
    return rows


def plot(res: dict, path: str) -> None:
    plt = bc.pyplot()
    if plt is None:
        return
    size = [s for s in res["sizes"] if s["K"] == 4096] or res["sizes"]
    size = size[0]
    modes = sorted({r["mode"] for r in size["timings"]}, key=lambda m: (m != "stream", m))
    fig, axes = plt.subplots(2, len(modes), figsize=(4 * len(modes), 7), squeeze=False)
    names = [n for n in size["sizes"] if n != "fp32 event"]
    for j, mode in enumerate(modes):
        rs = [r for r in size["timings"] if r["mode"] == mode]
        d = [r["density"] * 100 for r in rs]
        for n in names:
            axes[0][j].plot(d, [r["fp32 event_s"] / r[f"{n}_s"] for r in rs], marker="o", label=n)
            axes[1][j].plot(d, [r["torch_dense_s"] / r[f"{n}_s"] for r in rs], marker="o", label=n)
        axes[0][j].set_title(f"{mode}: speedup vs fp32 event")
        axes[1][j].set_title(f"{mode}: speedup vs torch dense")
        for i in range(2):
            axes[i][j].set_xscale("log")
            axes[i][j].set_yscale("log")
            axes[i][j].set_xlabel("spike density (%)")
            axes[i][j].grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Packed event-driven linear, K = N = {size['K']}, {res['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one layer size, fewer densities and repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch/kernel threads (default: torch's)")
    ap.add_argument("--name", default="packed", help="result file name under bench/results/")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        shapes, densities, batches, repeats = [(4096, 4096)], [0.01, 0.05, 0.2, 0.5], [8, 32], 7
    else:
        shapes = [(1024, 1024), (4096, 4096), (8192, 8192)]
        densities, batches, repeats = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5], [8, 32], 15
    res = {"load_average": os.getloadavg(), "copy_bandwidth_GBs": bc.copy_bandwidth(256 << 20) / 1e9,
           "threads": torch.get_num_threads(),
           "quick": args.quick, "pool": POOL, "sizes": []}
    for K, N in shapes:
        res["sizes"].append(run_size(K, N, densities, batches, repeats, prune_keep=0.1))
    res["conv"] = run_conv(repeats, [0.05, 0.2] if args.quick else [0.01, 0.05, 0.2, 0.5])
    res["targets"] = targets(res)
    print(bc.write_results(args.name, res, markdown(res)))
    plot(res, str(bc.RESULTS / f"{args.name}.png"))
    for t in res["targets"]:
        print(t)


if __name__ == "__main__":
    sparsesnn.tune_allocator()  # as in every benchmark: big outputs reuse freed heap blocks
    main()
