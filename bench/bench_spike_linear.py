"""Event-driven ``F.spike_linear(s, w)`` and ``SpikingLinear`` vs torch dense and torch.sparse.

Sweeps spike density x rows M (= T * B) x layer size and reports the measured break-even
density (where event-driven stops beating dense). Everything as a user calls it, default
settings, each library in its own fresh process, inputs seeded identically in both:

* sparsesnn process: ``F.spike_linear(s, w)`` (no cached weight passed: the op must not pay a
  re-layout per call), ``SpikingLinear(K, N, bias=False)`` (density measurement and dense /
  event dispatch included), forward under ``no_grad`` and forward+backward through autograd
  (spikes and weight both need grads, as inside an SNN).
* torch process: ``F.linear(s, w)`` (MKL) forward and forward+backward, and
  ``s.to_sparse_csr() @ w.t()`` (torch.sparse; the conversion counts: spikes arrive dense).

Diagnostic columns, not as called: the event kernel alone with a prebuilt input-major weight,
and the weight-gradient kernel alone vs its dense GEMM ``g.t() @ s``.

    python bench/bench_spike_linear.py            # full sweep
    python bench/bench_spike_linear.py --quick    # smaller sweep
    python bench/bench_spike_linear.py --smoke    # checks the script runs (numbers meaningless)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402


def plan(size: str) -> dict:
    if size == "smoke":
        return dict(sizes=[[256, 256]], ms=[16], densities=[0.05, 0.5], timing=bc.SMOKE_TIMING)
    if size == "quick":
        return dict(sizes=[[2048, 2048]], ms=[16, 256, 1024], densities=[0.01, 0.05, 0.2, 0.5],
                    timing={"repeat": 3})
    return dict(sizes=[[512, 512], [2048, 2048]], ms=[1, 16, 256, 1024, 4096],
                densities=[0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5], timing={"repeat": 5})


def _points(sizes, ms, densities):
    """(K, N, weight [N, K], M, density, spikes [M, K], grad_out [M, N]): the same in every process."""
    for K, N in sizes:
        w = torch.randn(N, K, generator=bc.generator("linear w", K, N)) / K**0.5
        for M in ms:
            for d in densities:
                yield K, N, w, M, d, bc.spikes((M, K), d, "linear"), \
                    torch.randn(M, N, generator=bc.generator("linear g", M, N, d))


def sweep_sparsesnn(sizes, ms, densities, timing):
    import sparsesnn.functional as SF
    from sparsesnn.nn import SpikingLinear

    out, layer = [], None
    for K, N, w, M, d, s, g in _points(sizes, ms, densities):
        if layer is None or (layer.in_features, layer.out_features) != (K, N):
            layer = SpikingLinear(K, N, bias=False)
            with torch.no_grad():
                layer.weight.copy_(w)
        with torch.no_grad():
            rec = {"K": K, "N": N, "M": M, "density": d, "nnz": int(s.count_nonzero()),
                   "event_s": bc.timeit(lambda: SF.spike_linear(s, w), **timing),
                   "module_s": bc.timeit(lambda: layer(s), **timing), "module_path": layer.last_path}
        rec["fwd_bwd_s"] = bc.fwd_bwd_time(SF.spike_linear, s, w, g, timing)
        rec.update(_diagnostic(s, w, g, timing))
        out.append(rec)
        print(f"K={K} M={M} d={d}: spike_linear {rec['event_s'] * 1e3:.3f} ms, SpikingLinear "
              f"{rec['module_s'] * 1e3:.3f} ms [{rec['module_path']}]", flush=True)
    return out


def _diagnostic(s, w, g, timing) -> dict:
    """Kernels alone (internal ops, prebuilt weight layout, no checks): not as called. The
    forward also with each schedule forced (row order, input order; the default picks one)."""
    from sparsesnn import _ext
    from sparsesnn.ops.spike_linear import _params, kernel_weight, spike_linear_grad_weight_op, spike_linear_op

    wt = kernel_weight(w)
    out = torch.empty(s.shape[0], w.shape[0])

    def forced(order):
        p = _params(s.shape[0], s.shape[1], w.shape[0], s)
        p.order, p.panel = order, wt.shape[2]
        return lambda: _ext._C.spike_linear_forward_cpu(p, s.data_ptr(), wt.data_ptr(), 0, out.data_ptr())

    with torch.no_grad():
        return {"kernel_s": bc.timeit(lambda: spike_linear_op(s, w, wt, None), **timing),
                "kernel_rows_s": bc.timeit(forced(1), **timing), "kernel_inputs_s": bc.timeit(forced(2), **timing),
                "kernel_gradw_s": bc.timeit(lambda: spike_linear_grad_weight_op(s, g), **timing)}


def sweep_torch(sizes, ms, densities, timing):
    F = torch.nn.functional
    out = []
    for K, N, w, M, d, s, g in _points(sizes, ms, densities):
        with torch.no_grad():
            rec = {"K": K, "N": N, "M": M, "density": d,
                   "dense_s": bc.timeit(lambda: F.linear(s, w), **timing),
                   "dense_gradw_s": bc.timeit(lambda: g.t() @ s, **timing), "csr_s": None}
            if d <= 0.2 or M * K <= 256 * 2048:  # CSR at high density only costs time
                rec["csr_s"] = bc.timeit(lambda: s.to_sparse_csr() @ w.t(), **timing)
        rec["fwd_bwd_s"] = bc.fwd_bwd_time(F.linear, s, w, g, timing)
        out.append(rec)
        print(f"K={K} M={M} d={d}: F.linear {rec['dense_s'] * 1e3:.3f} ms", flush=True)
    return out


def main() -> None:
    args = bc.start(bc.parser(__doc__).parse_args())
    pl = plan(args.size)
    kw = {k: pl[k] for k in ("sizes", "ms", "densities", "timing")}
    ours = bc.isolated("bench_spike_linear:sweep_sparsesnn", **kw)
    dense = bc.isolated("bench_spike_linear:sweep_torch", **kw)
    copy_bw = bc.isolated("_common:copy_bandwidths", sizes=[64 << 20])[0]  # bytes/s, read + write

    rows, diag_rows, records = [], [], []
    for o, t in zip(ours, dense):
        K, N, M, d = (o[k] for k in ("K", "N", "M", "density"))
        assert (K, N, M, d) == (t["K"], t["N"], t["M"], t["density"])
        rec = dict(K=K, N=N, M=M, density=d, dense_ms=t["dense_s"] * 1e3, event_ms=o["event_s"] * 1e3,
                   module_ms=o["module_s"] * 1e3, module_path=o["module_path"],
                   sparse_csr_ms=None if t["csr_s"] is None else t["csr_s"] * 1e3,
                   fwd_speedup_vs_dense=t["dense_s"] / o["event_s"],
                   fwd_speedup_vs_sparse=None if t["csr_s"] is None else t["csr_s"] / o["event_s"],
                   module_vs_dense=t["dense_s"] / o["module_s"],
                   fwd_bwd_dense_ms=t["fwd_bwd_s"] * 1e3, fwd_bwd_event_ms=o["fwd_bwd_s"] * 1e3,
                   fwd_bwd_speedup=t["fwd_bwd_s"] / o["fwd_bwd_s"],
                   # Diagnostic (kernels alone, not as called).
                   kernel_ms=o["kernel_s"] * 1e3, kernel_vs_dense=t["dense_s"] / o["kernel_s"],
                   kernel_row_order_ms=o["kernel_rows_s"] * 1e3, kernel_input_order_ms=o["kernel_inputs_s"] * 1e3,
                   gradw_dense_ms=t["dense_gradw_s"] * 1e3, gradw_kernel_ms=o["kernel_gradw_s"] * 1e3,
                   gradw_kernel_vs_dense=t["dense_gradw_s"] / o["kernel_gradw_s"],
                   # Weight bytes the event path must read (one row per event) per second.
                   event_weight_gbs=o["nnz"] * N * 4 / o["event_s"] / 1e9)
        records.append(rec)
        rows.append([K, M, d, rec["dense_ms"], rec["event_ms"], rec["fwd_speedup_vs_dense"],
                     rec["fwd_speedup_vs_sparse"], rec["module_vs_dense"], rec["module_path"],
                     rec["fwd_bwd_speedup"]])
        diag_rows.append([K, M, d, rec["kernel_ms"], rec["kernel_row_order_ms"], rec["kernel_input_order_ms"],
                          rec["kernel_vs_dense"], rec["gradw_kernel_vs_dense"]])
    be = bc.break_even(records, ("K", "M"), {"forward": "fwd_speedup_vs_dense", "fwd+bwd": "fwd_bwd_speedup"})

    target = [r for r in records if r["K"] == 2048 and r["M"] == 256 and r["density"] == 0.05]
    md = ["## `F.spike_linear(s, w)` and `SpikingLinear` vs `F.linear`, fp32, speedup = torch time / sparsesnn time\n",
          bc.markdown_table(["K=N", "M", "density", "F.linear ms", "F.spike_linear ms", "vs dense",
                             "vs torch.sparse", "SpikingLinear vs dense", "module path", "fwd+bwd vs dense"], rows),
          "\n## Measured break-even density (event-driven as fast as dense)\n",
          bc.markdown_table(["K=N", "M", "forward", "fwd+bwd"], [list(b.values()) for b in be]),
          "\n## Diagnostic, not as called: kernels alone (prebuilt weight layout, no checks)\n",
          bc.markdown_table(["K=N", "M", "density", "kernel ms", "row order ms", "input order ms",
                             "kernel vs F.linear", "grad_W kernel vs g.t() @ s"], diag_rows)]
    if target:
        t = target[0]
        vs_sparse = "" if t["fwd_speedup_vs_sparse"] is None else f", {t['fwd_speedup_vs_sparse']:.1f}x vs torch.sparse CSR"
        md.append(f"\nTarget point (M=256, K=N=2048, 5% density): `F.spike_linear` {t['fwd_speedup_vs_dense']:.2f}x "
                  f"and `SpikingLinear` {t['module_vs_dense']:.2f}x faster than dense{vs_sparse}.")
    md.append(f"\nCopy bandwidth measured in the same run: {copy_bw / 1e9:.1f} GB/s (read + write); the "
              "event path's effective weight-read bandwidth per point is in the JSON (`event_weight_gbs`): "
              "above it means the active weight rows were served from cache.")
    path = bc.write_results("spike_linear", {"size": args.size, "copy_bandwidth_gbs": copy_bw / 1e9,
                                             "records": records, "break_even": be}, "\n".join(md), args.machine)
    plot(records, pl["sizes"], pl["ms"])
    print(f"wrote {path}")


def plot(records, sizes, ms) -> None:
    plt = bc.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, (K, _) in zip(axes[0], sizes):
        for M in ms:
            sel = [r for r in records if r["K"] == K and r["M"] == M]
            ax.plot([r["density"] for r in sel], [r["fwd_speedup_vs_dense"] for r in sel], marker="o", label=f"M={M}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("spike density")
        ax.set_ylabel("F.spike_linear speedup vs F.linear")
        ax.set_title(f"spike_linear K=N={K} ({torch.get_num_threads()} threads, own processes)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(bc.RESULTS / "spike_linear.png", dpi=110)


if __name__ == "__main__":
    main()
