"""Fused multi-step LIF (``sparsesnn.nn.LIF()``) vs SpikingJelly, snnTorch and Norse.

Forward (inference), forward for training (what backward needs is kept) and forward+backward,
at T in {4, 8, 32} and N neurons up to 2^20, fp32 on CPU (or CUDA with --device cuda), plus a
small no-grad call (``[4, 1, 2048]``, a batch-1 inference step) where per-call overhead shows.
Each library runs its whole sweep in its own fresh process through its public module with
default settings (a user runs one library, with what a plain import gives); speedups are peer
time / sparsesnn time from the processes of this run. Effective bandwidth (bytes the op must
move / time) is compared with a plain copy measured in a torch-only process. The kernels
called directly on preallocated buffers are reported separately as a diagnostic.

    python bench/bench_lif.py            # full sweep
    python bench/bench_lif.py --quick    # smaller sweep
    python bench/bench_lif.py --smoke    # checks the script runs (numbers meaningless)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

PEERS = ("spikingjelly", "snntorch", "norse")
KINDS = ("infer", "train_fwd", "fwd_bwd")
SMALL = (4, 1, 2048)  # [T, B, N]: one batch-1 inference step of a 2048-neuron layer


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _measure(fn, shape, device: str, timing: dict) -> dict:
    """Seconds per call of ``fn(x) -> spikes`` for each of KINDS, on the same seeded input
    in every process."""
    sync = _sync(device)
    x = (torch.randn(*shape, generator=bc.generator("lif x", shape)) + 0.5).to(device)
    g = torch.randn(*shape, generator=bc.generator("lif g", shape)).to(device)

    def infer():
        with torch.no_grad():
            fn(x)
        sync()

    xg = x.clone().requires_grad_(True)

    def train_fwd():
        fn(xg)
        sync()

    def fwd_bwd():
        fn(xg).backward(g)
        xg.grad = None
        sync()

    return {k: bc.timeit(f, **timing) for k, f in zip(KINDS, (infer, train_fwd, fwd_bwd))}


def _sweep(make: Callable[[], Callable], cases, device: str, timing: dict) -> dict:
    """The whole sweep of one library (in its own process): ``make()`` builds its LIF as a
    callable ``x [T, ...] -> spikes [T, ...]`` with state reset per call."""
    out = {"cases": [{"T": T, "N": N, **_measure(make(), (T, N), device, timing)} for T, N in cases]}
    out["small_s"] = _small(make(), device, timing)
    return out


def _small(fn, device: str, timing: dict) -> float:
    """Seconds per no-grad call of ``fn`` on a SMALL input, where per-call overhead shows."""
    sync = _sync(device)
    x = (torch.randn(*SMALL, generator=bc.generator("lif small")) + 0.5).to(device)

    def run():
        fn(x)
        sync()
    with torch.no_grad():
        return bc.timeit(run, **timing)


def sweep_sparsesnn(cases, device, timing):
    import sparsesnn

    def make():
        node = sparsesnn.nn.LIF().to(device)  # defaults: tau 2, hard reset to 0, multi-step

        def run(x):
            node.reset()
            return node(x)
        return run
    out = _sweep(make, cases, device, timing)
    out["small_functional_s"] = _small(sparsesnn.functional.lif, device, timing)  # same call, functional form
    return out


def sweep_spikingjelly(cases, device, timing):
    from spikingjelly.activation_based import neuron

    def make():
        node = neuron.LIFNode(tau=2.0, step_mode="m").to(device)

        def run(x):
            node.reset()
            return node(x)
        return run
    return _sweep(make, cases, device, timing)


def sweep_snntorch(cases, device, timing):
    import snntorch as snn

    def make():  # beta = 1 - 1/tau, hard reset to zero: the same neuron as the others
        lif = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero").to(device)

        def run(x):
            mem = torch.zeros_like(x[0])
            spikes = []
            for t in range(x.shape[0]):
                s, mem = lif(x[t], mem)
                spikes.append(s)
            return torch.stack(spikes)
        return run
    return _sweep(make, cases, device, timing)


def sweep_norse(cases, device, timing):
    import norse.torch as norse

    def make():
        lif = norse.LIF().to(device)
        return lambda x: lif(x)[0]
    return _sweep(make, cases, device, timing)


def kernel_only(cases, timing):
    """Diagnostic: the CPU kernels called directly on preallocated buffers (no op dispatch,
    autograd or allocation): what arithmetic and memory traffic alone cost. Internal API."""
    from sparsesnn import _ext
    from sparsesnn.ops.lif import Neuron, _params

    out = []
    for T, N in cases:
        x, g = torch.randn(T, N) + 0.5, torch.randn(T, N)
        s, gx, v, gv0 = torch.empty_like(x), torch.empty_like(x), torch.empty(N), torch.empty(N)
        p = _params(T, N, 0.5, Neuron())

        def fwd():
            _ext._C.lif_forward_cpu(p, x.data_ptr(), 0, s.data_ptr(), v.data_ptr())

        def bwd():
            _ext._C.lif_backward_cpu(p, g.data_ptr(), 0, x.data_ptr(), 0, gx.data_ptr(),
                                     gv0.data_ptr(), False)

        def both():
            fwd()
            bwd()
        out.append({"T": T, "N": N, **{k: bc.timeit(f, **timing) for k, f in
                                        (("fwd", fwd), ("bwd", bwd), ("fwd_bwd", both))}})
    return out


def sizes(size: str):
    if size == "smoke":
        return [(4, 2**12)], [(4, 2**12)], bc.SMOKE_TIMING
    if size == "quick":
        return [(T, N) for T in (4, 32) for N in (2**14, 2**18)], [(32, 2**14), (32, 2**18)], {}
    return [(T, N) for T in (4, 8, 32) for N in (2**14, 2**18, 2**20)], [(32, 2**14), (32, 2**18)], {}


def main() -> None:
    p = bc.parser(__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default=None, help="result file name under bench/results/ (default lif_<device>)")
    args = bc.start(p.parse_args())
    device = args.device
    cases, kernel_cases, timing = sizes(args.size)
    res = {"sparsesnn": bc.isolated("bench_lif:sweep_sparsesnn", cases=cases, device=device, timing=timing)}
    for name in PEERS:
        r = bc.isolated(f"bench_lif:sweep_{name}", optional=True, cases=cases, device=device, timing=timing)
        if r is not None:
            res[name] = r
    peers = [p for p in PEERS if p in res]
    copy_bw = bc.isolated("_common:copy_bandwidths", sizes=[4 * T * N for T, N in cases], device=device)
    kernel = None
    if device == "cpu" and kernel_cases:
        try:
            kernel = bc.isolated("bench_lif:kernel_only", cases=kernel_cases, timing=timing)
        except RuntimeError as exc:  # internal API: a changed kernel signature must not stop the benchmark
            print(f"kernel-only diagnostic failed: {exc}")

    rows, records = [], []
    for i, (T, N) in enumerate(cases):
        o = res["sparsesnn"]["cases"][i]
        elems = T * N
        # Bytes each pass moves: x in + spikes out; backward recomputes H, so it reads x and
        # grad_spikes and writes grad_x (on CUDA it reads a saved H instead of x, and the
        # training forward also writes that H: 4 more bytes).
        bw = {"infer": 8 * elems / o["infer"], "train_fwd": 8 * elems / o["train_fwd"],
              "fwd_bwd": 20 * elems / o["fwd_bwd"]}
        times = {lib: {k: res[lib]["cases"][i][k] for k in KINDS} for lib in res}
        rec = {"T": T, "N": N, "copy_GBps": copy_bw[i] / 1e9, "times_s": times,
               "bandwidth_GBps": {k: v / 1e9 for k, v in bw.items()},
               "bandwidth_vs_copy": {k: v / copy_bw[i] for k, v in bw.items()},
               "speedup": {p: {k: times[p][k] / o[k] for k in KINDS} for p in peers}}
        records.append(rec)
        row = [T, N, o["infer"] * 1e3, o["fwd_bwd"] * 1e3,
               f"{bw['fwd_bwd'] / 1e9:.1f} ({100 * bw['fwd_bwd'] / copy_bw[i]:.0f}%)",
               f"{bw['infer'] / 1e9:.1f} ({100 * bw['infer'] / copy_bw[i]:.0f}%)"]
        for p in peers:
            row += [f"{rec['speedup'][p]['infer']:.1f}x", f"{rec['speedup'][p]['fwd_bwd']:.1f}x"]
        rows.append(row)
    headers = ["T", "N", "nn.LIF fwd ms", "nn.LIF fwd+bwd ms", "fwd+bwd GB/s (% copy)", "fwd GB/s (% copy)"]
    for p in peers:
        headers += [f"vs {p} fwd", f"vs {p} fwd+bwd"]
    md = ("`sparsesnn.nn.LIF()` vs each peer's LIF module (SpikingJelly `LIFNode(tau=2, step_mode='m')`, "
          "snnTorch `Leaky(beta=0.5)` stepped over T, Norse `LIF()`), state reset per call. "
          "Speedup = peer time / sparsesnn time (higher is better); fwd = inference forward; "
          "bandwidth = bytes that must move / time, vs a tensor copy of the same size measured in "
          "this run.\n\n" + bc.markdown_table(headers, rows))
    small = {"sparsesnn nn.LIF": res["sparsesnn"]["small_s"],
             "sparsesnn F.lif": res["sparsesnn"]["small_functional_s"],
             **{p: res[p]["small_s"] for p in peers}}
    md += (f"\n\nSmall no-grad call, input {list(SMALL)} (a batch-1 inference step), us per call:\n\n"
           + bc.markdown_table(["library", "us / call"], [[k, v * 1e6] for k, v in small.items()]))
    payload = {"device": device, "size": args.size, "results": records,
               "small_call": {"shape": list(SMALL), "seconds": small}}
    if kernel:
        payload["kernel_only_s"] = kernel
        md += ("\n\nDiagnostic, not as called: the kernels alone on preallocated buffers (no "
               "dispatch, autograd or allocation), ns per neuron-step:\n\n"
               + bc.markdown_table(["T", "N", "fwd", "bwd", "fwd+bwd"],
                                   [[k["T"], k["N"]] + [1e9 * k[c] / (k["T"] * k["N"]) for c in ("fwd", "bwd", "fwd_bwd")]
                                    for k in kernel]))
    name = args.name or f"lif_{device}"
    path = bc.write_results(name, payload, md, args.machine)
    plot(records, peers, name)
    print(md)
    print(f"wrote {path}")


def plot(records, peer_names, name: str) -> None:
    plt = bc.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ["infer", "fwd_bwd"]):
        for p in peer_names:
            for T in sorted({r["T"] for r in records}):
                pts = [(r["N"], r["speedup"][p][kind]) for r in records if r["T"] == T]
                ax.plot(*zip(*pts), marker="o", label=f"vs {p}, T={T}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("neurons N")
        ax.set_ylabel("speedup of sparsesnn")
        ax.set_title(f"LIF {kind} ({name}, each library in its own process)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(bc.RESULTS / f"{name}.png", dpi=110)


if __name__ == "__main__":
    main()
