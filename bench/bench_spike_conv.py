"""Event-driven spike_conv2d vs torch dense conv2d (oneDNN/MKL), forward and backward.

Sweeps spike density x batch (time folded in) x layer, in one run, and reports the measured
break-even density. Forward: ``F.conv2d(s, W)`` vs the event-driven op with the module's
cached channels-last weight, and ``SpikingConv2d`` (density measurement + dispatch
included). Backward for a given grad_out: grad_W dense (``torch.nn.grad.conv2d_weight``) vs
event-driven; grad_s is the same dense transposed convolution on both paths, so the full
backward ratio is reported too. torch.sparse has no sparse convolution, so it is not a
baseline here (see bench_spike_linear for torch.sparse).

    python bench/bench_spike_conv.py            # full sweep
    python bench/bench_spike_conv.py --quick    # smaller sweep
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, markdown_table, pyplot, quick_cli, timeit, write_results  # noqa: E402

from sparsesnn import functional as SF  # noqa: E402
from sparsesnn import reference  # noqa: E402
from sparsesnn.nn import SpikingConv2d  # noqa: E402
from sparsesnn.ops.spike_conv2d import spike_conv2d_grad_weight_op  # noqa: E402

from bench_spike_linear import crossing  # noqa: E402

# name, C, O, kernel, H=W, stride, padding
LAYERS = [
    ("128->128 3x3 32x32", 128, 128, 3, 32, 1, 1),
    ("64->64 3x3 16x16", 64, 64, 3, 16, 1, 1),
    ("64->128 3x3 s2 32x32", 64, 128, 3, 32, 2, 1),
]


def run(quick: bool) -> None:
    densities = [0.01, 0.05, 0.2, 0.5] if quick else [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
    batches = [4, 16] if quick else [1, 4, 16, 64]
    layers = LAYERS[:1] if quick else LAYERS
    repeat = 3 if quick else 5
    rows, records = [], []
    gen = torch.Generator().manual_seed(0)
    for name, C, O, k, HW, stride, pad in layers:
        layer = SpikingConv2d(C, O, k, stride, pad, bias=False)
        w = layer.weight.detach()
        wr = layer.weight_r()
        for B in batches:
            if B * C * HW * HW > 64 * 128 * 32 * 32 // (4 if quick else 1):
                continue
            for d in densities:
                s = (torch.rand(B, C, HW, HW, generator=gen) < d).float()
                with torch.no_grad():
                    t_dense = timeit(lambda: torch.nn.functional.conv2d(s, w, None, stride, pad), repeat=repeat)
                    t_event = timeit(lambda: SF.spike_conv2d(s, w, None, stride, pad, weight_r=wr, check_binary=False),
                                     repeat=repeat)
                    t_module = timeit(lambda: layer(s), repeat=repeat)
                    path = layer.last_path
                    out = torch.nn.functional.conv2d(s, w, None, stride, pad)
                    g = torch.randn(out.shape, generator=gen)
                    geo = ([stride, stride], [pad, pad], [1, 1], 1)
                    t_gw_dense = timeit(lambda: torch.nn.grad.conv2d_weight(s, w.shape, g, stride, pad), repeat=repeat)
                    t_gw_event = timeit(lambda: spike_conv2d_grad_weight_op(s, g, list(w.shape), *geo), repeat=repeat)
                    t_gs = timeit(lambda: reference.spike_conv2d_grad_input(g, w, (HW, HW), *geo), repeat=repeat)
                rec = dict(layer=name, batch=B, density=d, dense_ms=t_dense * 1e3, event_ms=t_event * 1e3,
                           module_ms=t_module * 1e3, module_path=path, fwd_speedup=t_dense / t_event,
                           module_vs_dense=t_dense / t_module, gradw_dense_ms=t_gw_dense * 1e3,
                           gradw_event_ms=t_gw_event * 1e3, gradw_speedup=t_gw_dense / t_gw_event,
                           bwd_speedup=(t_gs + t_gw_dense) / (t_gs + t_gw_event))
                records.append(rec)
                print(f"{name} B={B:3d} d={d:.3f}: dense {t_dense*1e3:8.3f} ms event {t_event*1e3:8.3f} ms "
                      f"({t_dense/t_event:5.2f}x) module {t_module*1e3:8.3f} [{path}] "
                      f"gradW {t_gw_dense/t_gw_event:5.2f}x bwd {rec['bwd_speedup']:5.2f}x", flush=True)
                rows.append([name, B, d, t_dense * 1e3, t_event * 1e3, t_dense / t_event, t_dense / t_module, path,
                             t_gw_dense / t_gw_event, rec["bwd_speedup"]])
    be_rows, break_even = [], []
    for name, *_ in layers:
        for B in batches:
            sel = [r for r in records if r["layer"] == name and r["batch"] == B]
            if not sel:
                continue
            dens = [r["density"] for r in sel]
            fwd = crossing(dens, [r["fwd_speedup"] for r in sel])
            bwd = crossing(dens, [r["bwd_speedup"] for r in sel])
            break_even.append(dict(layer=name, batch=B, forward=fwd, backward=bwd))
            fmt = lambda v: f"> {dens[-1]}" if v is None else f"{v:.3f}"  # noqa: E731
            be_rows.append([name, B, fmt(fwd), fmt(bwd)])
    md = ["## Forward and backward, fp32, speedup = torch time / sparsesnn time\n",
          markdown_table(["layer", "batch", "density", "dense ms", "event ms", "vs dense", "SpikingConv2d vs dense",
                          "module path", "grad_W vs dense", "backward vs dense"], rows),
          "\n## Measured break-even density (event-driven as fast as dense)\n",
          markdown_table(["layer", "batch", "forward", "backward (grad_s + grad_W)"], be_rows)]
    path = write_results("spike_conv", {"quick": quick, "records": records, "break_even": break_even}, "\n".join(md))
    plot(records, layers, batches)
    print(f"wrote {path}")


def plot(records, layers, batches) -> None:
    plt = pyplot()
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
        ax.set_ylabel("forward speedup vs torch conv2d")
        ax.set_title(f"spike_conv2d {name} ({torch.get_num_threads()} threads)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "spike_conv.png", dpi=110)


if __name__ == "__main__":
    run(quick_cli(__doc__))
