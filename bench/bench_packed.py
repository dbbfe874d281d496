"""Packed low-bit / pruned weights: memory and time against fp32 baselines, as called.

For each format (int8, int4, int2, ternary, binary, and pruned variants) and layer size:
  * bytes: real ``model_bytes()`` of the packed layer vs the fp32 layer (weight + bias);
  * time of the ``PackedSpikingLinear`` module call (input checks, density measurement and
    dispatch included) vs (a) the fp32 event-driven module (``PackedSpikingLinear`` without a
    spec) and ``F.spike_linear(x, W, b)``, (b) torch dense fp32 ``F.linear`` (MKL) and (c)
    torch.sparse ``addmm(b, x.to_sparse_csr(), W.t())``, at batch 1 streaming (one timestep
    per call), batch 1 with T steps in one call, and batches 8 and 32, over densities 1-50%;
  * analog input through the module (dense-path kernel) vs torch dense;
  * diagnostics, not as called: each kernel alone (internal op on prepared buffers), and the
    event kernel vs the dense-path kernel over density (where dispatch should switch);
  * ``PackedSpikingConv2d`` vs ``F.conv2d``.
sparsesnn runs in one fresh process, torch in another, with identical seeded inputs and
default settings. Every call of a configuration gets a different spike pattern (a pool of
inputs is cycled) so the active weight rows are not all cache-resident from the previous call.

    python bench/bench_packed.py [--quick | --smoke] [--threads N] [--name packed]

Writes ``bench/results/<name>.{json,md,png}``.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

FORMATS = ["int8", "int4", "int2", "ternary", "binary"]
POOL = 8  # distinct inputs cycled per configuration
T_STEPS = 16
PRUNE_KEEP = 0.1
CONV = (128, 128, 3, 32)  # C, O, kernel, H=W (stride 1, padding 1)


def plan(size: str) -> dict:
    if size == "smoke":
        return dict(shapes=[[512, 512]], densities=[0.05], batches=[8], conv_densities=[0.05], conv_batches=[1],
                    timing=bc.SMOKE_TIMING)
    timing = {"warmup": 2, "min_time": 0.02, "repeat": 7 if size == "quick" else 15}
    if size == "quick":
        return dict(shapes=[[4096, 4096]], densities=[0.01, 0.05, 0.2, 0.5], batches=[8, 32],
                    conv_densities=[0.05, 0.2], conv_batches=[1, 8], timing=timing)
    return dict(shapes=[[1024, 1024], [4096, 4096], [8192, 8192]], densities=[0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
                batches=[8, 32], conv_densities=[0.01, 0.05, 0.2, 0.5], conv_batches=[1, 8], timing=timing)


# ---- inputs, the same in every process ---------------------------------------------------
def _linear(K: int, N: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(K, N)


def _modes(batches):
    """(mode, rows per call, calls per timed run): time is reported per timestep for the
    batch-1 modes (``stream``: 16 one-step calls; ``T16x1``: one call of 16 rows), per call
    for ``B*``."""
    return [("stream", 1, T_STEPS), (f"T{T_STEPS}x1", T_STEPS, 1)] + [(f"B{b}", b, 1) for b in batches]


def _pool(shape, density, *key, n: int = POOL):
    return [bc.spikes(shape, density, "packed", *key, i) for i in range(n)]


def _timed(fn, pool, steps: int, timing: dict) -> float:
    """Seconds per call of ``fn`` cycling through ``pool``; with ``steps`` > 1 each timed call
    runs ``steps`` consecutive inputs (streaming) and the time is per step."""
    groups = [pool[i:i + steps] for i in range(0, len(pool), steps)] if steps > 1 else [[x] for x in pool]
    it = itertools.cycle(groups)

    def run():
        for x in next(it):
            fn(x)
    return bc.timeit(run, **timing) / steps


def _linear_points(K, densities, batches, timing):
    """(density, mode, time) per configuration; ``time(fn)`` is the seconds per timestep
    (batch-1 modes) or per call of ``fn`` over that configuration's input pool."""
    for density in densities:
        for mode, M, steps in _modes(batches):
            pool = _pool((M, K), density, K, mode, n=POOL * steps)
            per = M if mode.startswith("T") else 1
            yield density, mode, (lambda fn, pool=pool, steps=steps, per=per: _timed(fn, pool, steps, timing) / per)


# ---- sparsesnn process --------------------------------------------------------------------
def _layers(lin: torch.nn.Linear) -> dict:
    from sparsesnn.nn import PackedSpikingLinear
    from sparsesnn.quant import QuantSpec

    K, N = lin.in_features, lin.out_features
    layers = {"fp32 event": PackedSpikingLinear.from_float(lin, None)}
    for f in FORMATS:
        layers[f] = PackedSpikingLinear.from_float(lin, QuantSpec(f))
    # Magnitude pruning to PRUNE_KEEP of the weights, compressed rows by input neuron.
    thr = lin.weight.detach().abs().flatten().kthvalue(int((1 - PRUNE_KEEP) * K * N)).values
    mask = lin.weight.detach().abs() > thr
    tag = f"prune{round((1 - PRUNE_KEEP) * 100)}"
    layers[f"fp32+{tag}"] = PackedSpikingLinear.from_float(lin, None, mask=mask)
    layers[f"int4+{tag}"] = PackedSpikingLinear.from_float(lin, QuantSpec(4), mask=mask)
    return layers


def _kernel(m, spike: bool = True):
    """Diagnostic: the layer's kernel on a prepared fp32 [M, K] input (module checks,
    density count and dispatch excluded). Internal API."""
    from sparsesnn.ops.packed_linear import packed_linear_op
    from sparsesnn.ops.pruned_linear import pruned_linear_op

    if m.layout == "pruned":
        return lambda x: pruned_linear_op(x, m.row_ptr, m.index, m.values, m.scale, m.bias, m.bits,
                                          m.out_features, m.group_size, spike)
    return lambda x: packed_linear_op(x, m.weights, m.scale, m.bias, m.bits, m.out_features,
                                      m.group_size, spike)


@torch.no_grad()
def sweep_sparsesnn(shapes, densities, batches, timing, **_):
    import sparsesnn.functional as SF

    out = []
    for K, N in shapes:
        lin = _linear(K, N)
        W, b = lin.weight.detach(), lin.bias.detach()
        layers = _layers(lin)
        res = {"K": K, "N": N, "sizes": {n: m.model_bytes() for n, m in layers.items()}, "timings": []}
        for density, mode, time in _linear_points(K, densities, batches, timing):
            rec = {"density": density, "mode": mode, "spike_linear_s": time(lambda x: SF.spike_linear(x, W, b))}
            for name, m in layers.items():
                rec[f"{name}_s"] = time(m)
                rec[f"{name}_kernel_s"] = time(_kernel(m))
            res["timings"].append(rec)
            print(f"K=N={K} d={density:.2f} {mode:>6}: fp32 event {rec['fp32 event_s'] * 1e3:7.3f} ms  "
                  f"int4 {rec['int4_s'] * 1e3:7.3f} ms", flush=True)
        xa = [torch.randn(8, K, generator=bc.generator("analog", K, i)) for i in range(POOL)]
        res["analog"] = {f"{n}_s": _timed(layers[n], xa, 1, timing) for n in ["fp32 event"] + FORMATS}
        res["crossover"] = []
        for density in [0.05, 0.2, 0.5, 0.8, 1.0]:  # where the int4 module should switch paths
            pool, m = _pool((8, K), density, K, "cross"), layers["int4"]
            res["crossover"].append({"density": density, "module_s": _timed(m, pool, 1, timing),
                                     "event_kernel_s": _timed(_kernel(m, True), pool, 1, timing),
                                     "dense_path_kernel_s": _timed(_kernel(m, False), pool, 1, timing)})
        out.append(res)
    return out


@torch.no_grad()
def conv_sparsesnn(conv_densities, conv_batches, timing, **_):
    from sparsesnn.nn import PackedSpikingConv2d
    from sparsesnn.quant import QuantSpec

    conv = _conv()
    layers = {"fp32 event": PackedSpikingConv2d.from_float(conv, None)}
    layers.update({f: PackedSpikingConv2d.from_float(conv, QuantSpec(f)) for f in FORMATS})
    out = []
    for batch, density, pool in _conv_points(conv_densities, conv_batches):
        rec = {"batch": batch, "density": density}
        for name, m in layers.items():
            rec[f"{name}_s"] = _timed(m, pool, 1, timing)
            rec[f"{name}_bytes"] = m.model_bytes()
        out.append(rec)
        print(f"conv B={batch} d={density:.2f}: fp32 event {rec['fp32 event_s'] * 1e3:.3f} ms  "
              f"int4 {rec['int4_s'] * 1e3:.3f} ms", flush=True)
    return out


def _conv() -> torch.nn.Conv2d:
    C, O, k, _ = CONV
    torch.manual_seed(0)
    return torch.nn.Conv2d(C, O, k, padding=1)


def _conv_points(densities, batches):
    C, _, _, HW = CONV
    for batch in batches:
        for density in densities:
            yield batch, density, _pool((batch, C, HW, HW), density, "conv", batch)


# ---- torch process ------------------------------------------------------------------------
@torch.no_grad()
def sweep_torch(shapes, densities, batches, timing, **_):
    out = []
    for K, N in shapes:
        lin = _linear(K, N)
        W, b = lin.weight.detach(), lin.bias.detach()
        dense = lambda x: F.linear(x, W, b)  # noqa: E731
        res = {"K": K, "N": N, "timings": []}
        for density, mode, time in _linear_points(K, densities, batches, timing):
            res["timings"].append({"density": density, "mode": mode, "torch_dense_s": time(dense),
                                   "torch_sparse_s": time(lambda x: torch.addmm(b, x.to_sparse_csr(), W.t()))})
            print(f"K=N={K} d={density:.2f} {mode:>6}: F.linear {res['timings'][-1]['torch_dense_s'] * 1e3:.3f} ms",
                  flush=True)
        xa = [torch.randn(8, K, generator=bc.generator("analog", K, i)) for i in range(POOL)]
        res["analog"] = {"torch_dense_s": _timed(dense, xa, 1, timing)}
        res["crossover"] = [{"density": d, "torch_dense_s": _timed(dense, _pool((8, K), d, K, "cross"), 1, timing)}
                            for d in [0.05, 0.2, 0.5, 0.8, 1.0]]
        out.append(res)
    return out


@torch.no_grad()
def conv_torch(conv_densities, conv_batches, timing, **_):
    conv = _conv()
    W, b = conv.weight.detach(), conv.bias.detach()
    return [{"batch": batch, "density": density,
             "torch_dense_s": _timed(lambda x: F.conv2d(x, W, b, 1, 1), pool, 1, timing)}
            for batch, density, pool in _conv_points(conv_densities, conv_batches)]


# ---- merge and report ---------------------------------------------------------------------
def merge(ours: list, dense: list, conv_ours: list, conv_dense: list) -> dict:
    """One record per configuration with every library's time, from the two processes."""
    sizes = []
    for o, t in zip(ours, dense):
        K, N = o["K"], o["N"]
        fp32_bytes = (K * N + N) * 4
        timings = []
        for a, c in zip(o["timings"], t["timings"]):
            assert (a["density"], a["mode"]) == (c["density"], c["mode"])
            timings.append({"K": K, "N": N, **a, **c})
        sizes.append({"K": K, "N": N, "fp32_bytes": fp32_bytes, "timings": timings,
                      "sizes": {n: {"bytes": v, "ratio_vs_fp32": fp32_bytes / v} for n, v in o["sizes"].items()},
                      "analog": [{"K": K, "N": N, "batch": 8, **o["analog"], **t["analog"]}],
                      "crossover": [{"K": K, "N": N, "batch": 8, **a, **c} for a, c in zip(o["crossover"], t["crossover"])]})
    conv = [{**a, **c} for a, c in zip(conv_ours, conv_dense)]
    return {"sizes": sizes, "conv": conv}


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def markdown(res: dict) -> str:
    out = [f"Packed low-bit / pruned weights. Copy bandwidth measured in this run: {res['copy_bandwidth_GBs']:.1f} GB/s.", "",
           "Times are medians of module calls; `stream` = batch 1, one timestep per call (time per step); "
           f"`T{T_STEPS}x1` = {T_STEPS} timesteps of batch 1 in one call (time per step); `B8`/`B32` = one call. "
           "`fp32 event` is `PackedSpikingLinear` without a spec (fp32 input-major weights, same kernel "
           "structure as the packed ones); `spike_linear` is `F.spike_linear(x, W, b)`; `torch dense` is "
           "`F.linear` (MKL); `torch.sparse` is `addmm` with the spikes as CSR. Speedups are baseline time "
           "/ packed time.", ""]
    for size in res["sizes"]:
        K = size["K"]
        out += [f"## K = N = {K} (fp32 weights {size['fp32_bytes'] / 2**20:.1f} MiB)", "", "### Bytes", ""]
        out.append(bc.markdown_table(["format", "bytes", "x smaller than fp32"],
                                     [[n, v["bytes"], f"{v['ratio_vs_fp32']:.2f}"] for n, v in size["sizes"].items()]))
        names = [n for n in size["sizes"] if n != "fp32 event"]
        out += ["", "### Module time (ms) and speedup of each format vs fp32 event / torch dense", ""]
        hdr = ["density", "mode", "torch dense", "torch.sparse", "spike_linear", "fp32 event"] + names
        rows, diag = [], []
        for r in size["timings"]:
            row = [f"{r['density']:.0%}", r["mode"]] + [fmt_ms(r[k]) for k in
                                                       ("torch_dense_s", "torch_sparse_s", "spike_linear_s", "fp32 event_s")]
            for n in names:
                t = r[f"{n}_s"]
                row.append(f"{fmt_ms(t)} (x{r['fp32 event_s'] / t:.1f} / x{r['torch_dense_s'] / t:.0f})")
            rows.append(row)
            diag.append([f"{r['density']:.0%}", r["mode"]] + [fmt_ms(r[f"{n}_kernel_s"]) for n in ["fp32 event"] + names])
        out.append(bc.markdown_table(hdr, rows))
        out += ["", "### Analog input through the module (dense-path kernel), batch 8 (ms)", ""]
        a = size["analog"][0]
        out.append(bc.markdown_table(["torch dense", "fp32 (input-major)"] + FORMATS,
                                     [[fmt_ms(a["torch_dense_s"]), fmt_ms(a["fp32 event_s"])] + [fmt_ms(a[f"{f}_s"]) for f in FORMATS]]))
        out += ["", "### Diagnostic, not as called: each kernel alone on a prepared input (ms)", ""]
        out.append(bc.markdown_table(["density", "mode", "fp32 event"] + names, diag))
        out += ["", "### Diagnostic: int4, batch 8, event (integer) kernel vs dense-path kernel over density (ms)", ""]
        out.append(bc.markdown_table(["density", "module (as called)", "event kernel", "dense-path kernel", "torch dense"],
                                     [[f"{c['density']:.0%}", fmt_ms(c["module_s"]), fmt_ms(c["event_kernel_s"]),
                                       fmt_ms(c["dense_path_kernel_s"]), fmt_ms(c["torch_dense_s"])] for c in size["crossover"]]))
        out.append("")
    if res.get("conv"):
        C, O, k, HW = CONV
        out += [f"## PackedSpikingConv2d {C} -> {O}, {k}x{k}, {HW}x{HW}, binary spikes "
                "(ms; speedup vs fp32 event / torch dense)", ""]
        names = ["fp32 event"] + FORMATS
        c0 = res["conv"][0]
        out += ["Bytes: " + ", ".join(f"{n} {c0[f'{n}_bytes']}" for n in names), ""]
        rows = [[c["batch"], f"{c['density']:.0%}", fmt_ms(c["torch_dense_s"])] +
                [f"{fmt_ms(c[f'{n}_s'])} (x{c['fp32 event_s'] / c[f'{n}_s']:.1f} / x{c['torch_dense_s'] / c[f'{n}_s']:.1f})"
                 for n in names] for c in res["conv"]]
        out += [bc.markdown_table(["batch", "density", "torch dense"] + names, rows), ""]
    out += ["## Targets (int4, K = N = 4096, 5% density; module calls)", ""]
    out.append(bc.markdown_table(["check", "measured", "target", "met"], res["targets"]))
    return "\n".join(out) + "\n"


def targets(res: dict) -> list[list]:
    rows = []
    tag = f"prune{round((1 - PRUNE_KEEP) * 100)}"
    for size in res["sizes"]:
        if size["K"] != 4096:
            continue
        ratio = size["sizes"]["int4"]["ratio_vs_fp32"]
        rows.append(["int4 bytes vs fp32", f"x{ratio:.2f}", ">= 7", ratio >= 7])
        for r in size["timings"]:
            if abs(r["density"] - 0.05) > 1e-9:
                continue
            for label, key, goal in (("fp32 event", "fp32 event_s", 2), ("torch dense", "torch_dense_s", 8),
                                     ("spike_linear", "spike_linear_s", 2)):
                s = r[key] / r["int4_s"]
                rows.append([f"int4 vs {label}, {r['mode']}", f"x{s:.2f}", f">= {goal}", s >= goal])
            if r["mode"] == "stream":  # issue 10: compressed rows at least as fast as the dense layout
                s = r["int4_s"] / r[f"int4+{tag}_s"]
                rows.append([f"int4+{tag} vs int4, stream", f"x{s:.2f}", ">= 1", s >= 1])
    return rows


def plot(res: dict, path: Path) -> None:
    plt = bc.pyplot()
    if plt is None:
        return
    size = ([s for s in res["sizes"] if s["K"] == 4096] or res["sizes"])[0]
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
    fig.suptitle(f"PackedSpikingLinear, K = N = {size['K']}, {res['threads']} threads, own processes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = bc.parser(__doc__)
    p.add_argument("--name", default="packed", help="result file name under bench/results/")
    args = bc.start(p.parse_args())
    kw = plan(args.size)
    res = merge(bc.isolated("bench_packed:sweep_sparsesnn", **kw), bc.isolated("bench_packed:sweep_torch", **kw),
                bc.isolated("bench_packed:conv_sparsesnn", **kw), bc.isolated("bench_packed:conv_torch", **kw))
    res.update({"copy_bandwidth_GBs": bc.isolated("_common:copy_bandwidths", sizes=[256 << 20])[0] / 1e9,
                "threads": torch.get_num_threads(), "size": args.size, "pool": POOL})
    res["targets"] = targets(res)
    print(bc.write_results(args.name, res, markdown(res), args.machine))
    plot(res, bc.RESULTS / f"{args.name}.png")
    for t in res["targets"]:
        print(t)


if __name__ == "__main__":
    main()
