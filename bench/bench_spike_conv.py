"""Event-driven ``F.spike_conv2d(s, w)`` and ``SpikingConv2d`` vs torch dense ``F.conv2d``.

Sweeps spike density x batch (time folded in) x layer and reports the measured break-even
density. Everything as a user calls it, default settings, each library in its own fresh
process, inputs seeded identically in both:

* sparsesnn process: ``F.spike_conv2d(s, w, None, stride, padding)`` (no cached weight layout
  passed), ``SpikingConv2d`` (density measurement + dispatch included), forward under
  ``no_grad`` and forward+backward through autograd (grads for spikes and weight).
* torch process: ``F.conv2d`` (oneDNN/MKL) forward and forward+backward.

torch.sparse has no sparse convolution, so it is not a baseline here (see bench_spike_linear).
Diagnostic columns, not as called: the op with a prebuilt channels-last weight and no binary
check, and the weight-gradient kernel alone vs ``torch.nn.grad.conv2d_weight``.

    python bench/bench_spike_conv.py            # full sweep
    python bench/bench_spike_conv.py --quick    # smaller sweep
    python bench/bench_spike_conv.py --smoke    # checks the script runs (numbers meaningless)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

# name, C, O, kernel, H=W, stride, padding
LAYERS = [
    ["128->128 3x3 32x32", 128, 128, 3, 32, 1, 1],
    ["64->64 3x3 16x16", 64, 64, 3, 16, 1, 1],
    ["64->128 3x3 s2 32x32", 64, 128, 3, 32, 2, 1],
]
MAX_ELEMS = 64 * 128 * 32 * 32  # largest input (B * C * H * W) timed


def plan(size: str) -> dict:
    if size == "smoke":
        return dict(layers=[["16->16 3x3 8x8", 16, 16, 3, 8, 1, 1]], batches=[2], densities=[0.05, 0.5],
                    max_elems=MAX_ELEMS, timing=bc.SMOKE_TIMING)
    if size == "quick":
        return dict(layers=LAYERS[:1], batches=[4, 16], densities=[0.01, 0.05, 0.2, 0.5],
                    max_elems=MAX_ELEMS // 4, timing={"repeat": 3})
    return dict(layers=LAYERS, batches=[1, 4, 16, 64], densities=[0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5],
                max_elems=MAX_ELEMS, timing={"repeat": 5})


def _points(layers, batches, densities, max_elems):
    """(layer, weight, batch, density, spikes, grad_out): the same in every process."""
    for layer in layers:
        name, C, O, k, HW, stride, pad = layer
        w = torch.randn(O, C, k, k, generator=bc.generator("conv w", name)) / (C * k * k) ** 0.5
        OHW = (HW + 2 * pad - k) // stride + 1
        for B in batches:
            if B * C * HW * HW > max_elems:
                continue
            for d in densities:
                yield layer, w, B, d, bc.spikes((B, C, HW, HW), d, "conv"), \
                    torch.randn(B, O, OHW, OHW, generator=bc.generator("conv g", name, B, d))


def sweep_sparsesnn(layers, batches, densities, max_elems, timing):
    import sparsesnn.functional as SF
    from sparsesnn.nn import SpikingConv2d
    from sparsesnn.ops.spike_conv2d import rearrange_weight, spike_conv2d_grad_weight_op

    out, module = [], {}
    for (name, C, O, k, HW, stride, pad), w, B, d, s, g in _points(layers, batches, densities, max_elems):
        if name not in module:
            module[name] = SpikingConv2d(C, O, k, stride, pad, bias=False)
            with torch.no_grad():
                module[name].weight.copy_(w)
        m = module[name]

        def conv(x, wt):
            return SF.spike_conv2d(x, wt, None, stride, pad)
        with torch.no_grad():
            rec = {"layer": name, "batch": B, "density": d,
                   "event_s": bc.timeit(lambda: conv(s, w), **timing),
                   "module_s": bc.timeit(lambda: m(s), **timing), "module_path": m.last_path}
            # Diagnostic: prebuilt channels-last weight, no binary check; grad_W kernel alone.
            wr = rearrange_weight(w, 1)
            rec["kernel_s"] = bc.timeit(lambda: SF.spike_conv2d(s, w, None, stride, pad, weight_r=wr,
                                                                check_binary=False), **timing)
            geo = ([stride, stride], [pad, pad], [1, 1], 1)
            rec["kernel_gradw_s"] = bc.timeit(lambda: spike_conv2d_grad_weight_op(s, g, list(w.shape), *geo),
                                              **timing)
        rec["fwd_bwd_s"] = bc.fwd_bwd_time(conv, s, w, g, timing)
        out.append(rec)
        print(f"{name} B={B} d={d}: spike_conv2d {rec['event_s'] * 1e3:.3f} ms, SpikingConv2d "
              f"{rec['module_s'] * 1e3:.3f} ms [{rec['module_path']}]", flush=True)
    return out


def sweep_torch(layers, batches, densities, max_elems, timing):
    F = torch.nn.functional
    out = []
    for (name, C, O, k, HW, stride, pad), w, B, d, s, g in _points(layers, batches, densities, max_elems):
        def conv(x, wt):
            return F.conv2d(x, wt, None, stride, pad)
        with torch.no_grad():
            rec = {"layer": name, "batch": B, "density": d, "dense_s": bc.timeit(lambda: conv(s, w), **timing),
                   "dense_gradw_s": bc.timeit(lambda: torch.nn.grad.conv2d_weight(s, w.shape, g, stride, pad),
                                              **timing)}
        rec["fwd_bwd_s"] = bc.fwd_bwd_time(conv, s, w, g, timing)
        out.append(rec)
        print(f"{name} B={B} d={d}: F.conv2d {rec['dense_s'] * 1e3:.3f} ms", flush=True)
    return out


def main() -> None:
    args = bc.start(bc.parser(__doc__).parse_args())
    pl = plan(args.size)
    kw = {k: pl[k] for k in ("layers", "batches", "densities", "max_elems", "timing")}
    ours = bc.isolated("bench_spike_conv:sweep_sparsesnn", **kw)
    dense = bc.isolated("bench_spike_conv:sweep_torch", **kw)
    rows, diag_rows, records = [], [], []
    for o, t in zip(ours, dense):
        name, B, d = o["layer"], o["batch"], o["density"]
        assert (name, B, d) == (t["layer"], t["batch"], t["density"])
        rec = dict(layer=name, batch=B, density=d, dense_ms=t["dense_s"] * 1e3, event_ms=o["event_s"] * 1e3,
                   module_ms=o["module_s"] * 1e3, module_path=o["module_path"],
                   fwd_speedup=t["dense_s"] / o["event_s"], module_vs_dense=t["dense_s"] / o["module_s"],
                   fwd_bwd_dense_ms=t["fwd_bwd_s"] * 1e3, fwd_bwd_event_ms=o["fwd_bwd_s"] * 1e3,
                   fwd_bwd_speedup=t["fwd_bwd_s"] / o["fwd_bwd_s"],
                   # Diagnostic (not as called).
                   kernel_ms=o["kernel_s"] * 1e3, kernel_vs_dense=t["dense_s"] / o["kernel_s"],
                   gradw_dense_ms=t["dense_gradw_s"] * 1e3, gradw_kernel_ms=o["kernel_gradw_s"] * 1e3,
                   gradw_kernel_vs_dense=t["dense_gradw_s"] / o["kernel_gradw_s"])
        records.append(rec)
        rows.append([name, B, d, rec["dense_ms"], rec["event_ms"], rec["fwd_speedup"], rec["module_vs_dense"],
                     rec["module_path"], rec["fwd_bwd_speedup"]])
        diag_rows.append([name, B, d, rec["kernel_ms"], rec["kernel_vs_dense"], rec["gradw_kernel_vs_dense"]])
    be = bc.break_even(records, ("layer", "batch"), {"forward": "fwd_speedup", "fwd+bwd": "fwd_bwd_speedup"})
    md = ["## `F.spike_conv2d(s, w)` and `SpikingConv2d` vs `F.conv2d`, fp32, speedup = torch time / sparsesnn time\n",
          bc.markdown_table(["layer", "batch", "density", "F.conv2d ms", "F.spike_conv2d ms", "vs dense",
                             "SpikingConv2d vs dense", "module path", "fwd+bwd vs dense"], rows),
          "\n## Measured break-even density (event-driven as fast as dense)\n",
          bc.markdown_table(["layer", "batch", "forward", "fwd+bwd"], [list(b.values()) for b in be]),
          "\n## Diagnostic, not as called: prebuilt channels-last weight, no binary check; grad_W kernel alone\n",
          bc.markdown_table(["layer", "batch", "density", "kernel ms", "kernel vs F.conv2d",
                             "grad_W kernel vs conv2d_weight"], diag_rows)]
    path = bc.write_results("spike_conv", {"size": args.size, "records": records, "break_even": be},
                            "\n".join(md), args.machine)
    plot(records, pl["layers"], pl["batches"])
    print(f"wrote {path}")


def plot(records, layers, batches) -> None:
    plt = bc.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(layers), figsize=(6 * len(layers), 4.5), squeeze=False)
    for ax, (name, *_) in zip(axes[0], layers):
        for B in batches:
            sel = [r for r in records if r["layer"] == name and r["batch"] == B]
            if sel:
                ax.plot([r["density"] for r in sel], [r["fwd_speedup"] for r in sel], marker="o", label=f"batch {B}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("spike density")
        ax.set_ylabel("F.spike_conv2d speedup vs F.conv2d")
        ax.set_title(f"spike_conv2d {name} ({torch.get_num_threads()} threads, own processes)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(bc.RESULTS / "spike_conv.png", dpi=110)


if __name__ == "__main__":
    main()
