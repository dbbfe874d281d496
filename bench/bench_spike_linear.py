"""Event-driven spike x weight (spike_linear) vs torch dense (MKL) and torch.sparse (CSR).

Sweeps spike density x rows M (= T * B) x layer size, forward and backward separately, in one
run, and reports the measured break-even density (where event-driven stops beating dense).

Forward baselines: ``F.linear(s, W)`` (dense BLAS) and ``s.to_sparse_csr() @ W.t()``
(torch.sparse, conversion included: the spikes arrive dense). Event-driven is timed as the
functional op with the module's cached input-major weight, and as ``SpikingLinear`` (the
per-call density measurement and dense/event dispatch included).
Backward (grad_s + grad_W for a given grad_out): dense = two GEMMs; event = the same dense
``grad_s`` GEMM + the event-driven ``grad_W``. ``grad_W`` alone is reported as well.

    python bench/bench_spike_linear.py            # full sweep
    python bench/bench_spike_linear.py --quick    # smaller sweep
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, copy_bandwidth, markdown_table, pyplot, quick_cli, timeit,  # noqa: E402
                     write_results)

from sparsesnn import functional as SF  # noqa: E402
from sparsesnn.nn import SpikingLinear  # noqa: E402
from sparsesnn.ops.spike_linear import spike_linear_grad_weight_op  # noqa: E402


def crossing(densities, speedups):
    """Density where the speedup (dense / event) falls through 1, interpolated at the last such
    crossing (a single noisy low-density point does not count); None if event-driven is
    faster at every density tried, the first density if it is never faster."""
    points = list(zip(densities, speedups))
    for (d0, r0), (d1, r1) in zip(reversed(points[:-1]), reversed(points[1:])):
        if r0 >= 1.0 > r1:
            return d0 + (d1 - d0) * (r0 - 1.0) / (r0 - r1)
    if points and points[-1][1] >= 1.0:
        return None
    return densities[0] if points else None


def run(quick: bool) -> None:
    densities = [0.01, 0.05, 0.2, 0.5] if quick else [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
    ms = [16, 256, 1024] if quick else [1, 16, 256, 1024, 4096]
    sizes = [(2048, 2048)] if quick else [(512, 512), (2048, 2048)]
    repeat = 3 if quick else 5
    rows, records = [], []
    gen = torch.Generator().manual_seed(0)
    copy_bw = copy_bandwidth(64 << 20)  # bytes/s, read + write, same run
    for K, N in sizes:
        w = torch.randn(N, K, generator=gen) / K**0.5
        layer = SpikingLinear(K, N, bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        wt = layer.weight_t()
        for M in ms:
            for d in densities:
                s = (torch.rand(M, K, generator=gen) < d).float()
                g = torch.randn(M, N, generator=gen)
                with torch.no_grad():
                    t_dense = timeit(lambda: torch.nn.functional.linear(s, w), repeat=repeat)
                    t_event = timeit(lambda: SF.spike_linear(s, w, weight_t=wt, check_binary=False), repeat=repeat)
                    t_module = timeit(lambda: layer(s), repeat=repeat)
                    path = layer.last_path
                    t_sparse = None
                    if d <= 0.2 or M * K <= 256 * 2048:  # CSR at high density only costs time
                        t_sparse = timeit(lambda: s.to_sparse_csr() @ w.t(), repeat=repeat)
                    t_gw_dense = timeit(lambda: g.t() @ s, repeat=repeat)
                    t_gw_event = timeit(lambda: spike_linear_grad_weight_op(s, g), repeat=repeat)
                    t_gs = timeit(lambda: g @ w, repeat=repeat)
                rec = dict(K=K, N=N, M=M, density=d, dense_ms=t_dense * 1e3, event_ms=t_event * 1e3,
                           module_ms=t_module * 1e3, module_path=path,
                           sparse_csr_ms=None if t_sparse is None else t_sparse * 1e3,
                           fwd_speedup_vs_dense=t_dense / t_event,
                           fwd_speedup_vs_sparse=None if t_sparse is None else t_sparse / t_event,
                           module_vs_dense=t_dense / t_module,
                           gradw_dense_ms=t_gw_dense * 1e3, gradw_event_ms=t_gw_event * 1e3,
                           gradw_speedup=t_gw_dense / t_gw_event,
                           bwd_dense_ms=(t_gs + t_gw_dense) * 1e3, bwd_event_ms=(t_gs + t_gw_event) * 1e3,
                           bwd_speedup=(t_gs + t_gw_dense) / (t_gs + t_gw_event),
                           # Weight bytes the event path must read (one row per event) per second.
                           event_weight_gbs=float(s.sum()) * N * 4 / t_event / 1e9)
                records.append(rec)
                print(f"K=N={K} M={M:5d} d={d:.3f}: dense {t_dense*1e3:8.3f} ms  event {t_event*1e3:8.3f} ms "
                      f"({t_dense/t_event:5.2f}x)  module {t_module*1e3:8.3f} ms [{path}]  "
                      f"csr {'-' if t_sparse is None else f'{t_sparse*1e3:8.3f}'}  "
                      f"gradW {t_gw_dense/t_gw_event:5.2f}x  bwd {rec['bwd_speedup']:5.2f}x", flush=True)
                rows.append([K, M, d, t_dense * 1e3, t_event * 1e3, t_dense / t_event,
                             "-" if t_sparse is None else t_sparse / t_event, t_dense / t_module, path,
                             t_gw_dense / t_gw_event, rec["bwd_speedup"]])

    # Break-even per (size, M) from the sweep.
    be_rows, break_even = [], []
    for K, N in sizes:
        for M in ms:
            sel = [r for r in records if r["K"] == K and r["M"] == M]
            dens = [r["density"] for r in sel]
            fwd = crossing(dens, [r["fwd_speedup_vs_dense"] for r in sel])
            bwd = crossing(dens, [r["bwd_speedup"] for r in sel])
            break_even.append(dict(K=K, N=N, M=M, forward=fwd, backward=bwd))
            fmt = lambda v: f"> {dens[-1]}" if v is None else f"{v:.3f}"  # noqa: E731
            be_rows.append([f"{K}x{N}", M, fmt(fwd), fmt(bwd)])

    target = [r for r in records if r["K"] == 2048 and r["M"] == 256 and r["density"] == 0.05]
    md = ["## Forward and backward, fp32, speedup = torch time / sparsesnn time\n",
          markdown_table(["K=N", "M", "density", "dense ms", "event ms", "vs dense", "vs torch.sparse",
                          "SpikingLinear vs dense", "module path", "grad_W vs dense", "backward vs dense"], rows),
          "\n## Measured break-even density (event-driven as fast as dense)\n",
          markdown_table(["layer", "M", "forward", "backward (grad_s + grad_W)"], be_rows)]
    if target:
        t = target[0]
        vs_sparse = "" if t["fwd_speedup_vs_sparse"] is None else f", {t['fwd_speedup_vs_sparse']:.1f}x vs torch.sparse CSR"
        md.append(f"\nTarget point (M=256, K=N=2048, 5% density): forward {t['fwd_speedup_vs_dense']:.2f}x "
                  f"faster than dense{vs_sparse}.")
    md.append(f"\nCopy bandwidth measured in the same run: {copy_bw / 1e9:.1f} GB/s (read + write); the "
              "event path's effective weight-read bandwidth per point is in the JSON (`event_weight_gbs`): "
              "above it means the active weight rows were served from cache.")
    path = write_results("spike_linear", {"quick": quick, "copy_bandwidth_gbs": copy_bw / 1e9, "records": records,
                                          "break_even": break_even},
                         "\n".join(md))
    plot(records, sizes, ms)
    print(f"wrote {path}")


def plot(records, sizes, ms) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, (K, N) in zip(axes[0], sizes):
        for M in ms:
            sel = [r for r in records if r["K"] == K and r["M"] == M]
            ax.plot([r["density"] for r in sel], [r["fwd_speedup_vs_dense"] for r in sel], marker="o", label=f"M={M}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("spike density")
        ax.set_ylabel("forward speedup vs torch dense")
        ax.set_title(f"spike_linear K=N={K} ({torch.get_num_threads()} threads)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "spike_linear.png", dpi=110)


if __name__ == "__main__":
    run(quick_cli(__doc__))
