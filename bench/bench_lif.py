"""Fused multi-step LIF vs SpikingJelly, snnTorch and Norse (whichever are installed).

Forward (inference), forward for training (what backward needs is kept) and forward+backward,
at T in {4, 8, 32} and N neurons up to 2^20, fp32 on CPU (or CUDA with --device cuda).
Reports time, speedup of sparsesnn over each peer, and effective bandwidth (bytes the kernel
must move / time) against a plain copy measured in the same run.

    python bench/bench_lif.py            # full sweep
    python bench/bench_lif.py --quick    # smaller sweep
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, copy_bandwidth, markdown_table, pyplot, timeit, write_results  # noqa: E402

import sparsesnn  # noqa: E402
from sparsesnn import functional as SF  # noqa: E402


def peers(device: str):
    """name -> factory(T, N) returning a callable x -> spikes [T, N], for installed peers."""
    out = {}
    try:
        from spikingjelly.activation_based import neuron

        def sj(T, N):
            node = neuron.LIFNode(tau=2.0, step_mode="m").to(device)

            def run(x):
                node.reset()
                return node(x)
            return run
        out["spikingjelly"] = sj
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        print(f"spikingjelly unavailable: {exc}")
    try:
        import snntorch as snn

        def snt(T, N):
            lif = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero").to(device)

            def run(x):
                mem = torch.zeros_like(x[0])
                spikes = []
                for t in range(x.shape[0]):
                    s, mem = lif(x[t], mem)
                    spikes.append(s)
                return torch.stack(spikes)
            return run
        out["snntorch"] = snt
    except Exception as exc:  # noqa: BLE001
        print(f"snntorch unavailable: {exc}")
    try:
        import norse.torch as norse

        def nrs(T, N):
            lif = norse.LIF().to(device)

            def run(x):
                return lif(x)[0]
            return run
        out["norse"] = nrs
    except Exception as exc:  # noqa: BLE001
        print(f"norse unavailable: {exc}")
    return out


def ours(T, N):
    def run(x):
        return SF.lif(x, tau=2.0)[0]
    return run


def measure(make, T, N, device, sync):
    fn = make(T, N)
    x = torch.randn(T, N, device=device) + 0.5
    g = torch.randn(T, N, device=device)

    def infer():
        with torch.no_grad():
            fn(x)
        sync()

    xg = x.clone().requires_grad_(True)

    def train_fwd():
        fn(xg)
        sync()

    def fwd_bwd():
        s = fn(xg)
        s.backward(g)
        xg.grad = None
        sync()

    return {"infer": timeit(infer), "train_fwd": timeit(train_fwd), "fwd_bwd": timeit(fwd_bwd)}


def kernel_only(T: int, N: int) -> dict:
    """The CPU kernels called directly on preallocated buffers (no op dispatch, autograd or
    allocation): what the arithmetic and memory traffic alone cost, in ns per neuron-step."""
    from sparsesnn import _ext
    from sparsesnn.ops.lif import Neuron, _params

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
    return {k: 1e9 * timeit(f) / (T * N) for k, f in (("fwd", fwd), ("bwd", bwd), ("fwd_bwd", both))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = args.device
    sparsesnn.tune_allocator()  # process-wide: helps every library timed here alike
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    Ts = [4, 32] if args.quick else [4, 8, 32]
    Ns = [2**14, 2**18] if args.quick else [2**14, 2**18, 2**20]
    peer_makers = peers(device)
    rows, records = [], []
    for T in Ts:
        for N in Ns:
            elems = T * N
            copy_bw = copy_bandwidth(4 * elems, device)
            res = {"sparsesnn": measure(ours, T, N, device, sync)}
            for name, make in peer_makers.items():
                res[name] = measure(make, T, N, device, sync)
            o = res["sparsesnn"]
            # Bytes each pass moves: x in + spikes out; backward recomputes H, so it reads x and
            # grad_spikes and writes grad_x (on CUDA it reads a saved H instead of x, and the
            # training forward also writes that H: 4 more bytes).
            bw = {"infer": 8 * elems / o["infer"], "train_fwd": 8 * elems / o["train_fwd"],
                  "fwd_bwd": 20 * elems / o["fwd_bwd"]}
            rec = {"T": T, "N": N, "copy_GBps": copy_bw / 1e9, "times_s": res,
                   "bandwidth_GBps": {k: v / 1e9 for k, v in bw.items()},
                   "bandwidth_vs_copy": {k: v / copy_bw for k, v in bw.items()},
                   "speedup": {p: {k: res[p][k] / o[k] for k in o} for p in peer_makers}}
            records.append(rec)
            row = [T, N, o["infer"] * 1e3, o["fwd_bwd"] * 1e3,
                   f"{bw['fwd_bwd'] / 1e9:.1f} ({100 * bw['fwd_bwd'] / copy_bw:.0f}%)",
                   f"{bw['infer'] / 1e9:.1f} ({100 * bw['infer'] / copy_bw:.0f}%)"]
            for p in peer_makers:
                row += [f"{rec['speedup'][p]['infer']:.1f}x", f"{rec['speedup'][p]['fwd_bwd']:.1f}x"]
            rows.append(row)
            print(row, flush=True)
    headers = ["T", "N", "ours fwd ms", "ours fwd+bwd ms", "fwd+bwd GB/s (% copy)", "fwd GB/s (% copy)"]
    for p in peer_makers:
        headers += [f"vs {p} fwd", f"vs {p} fwd+bwd"]
    md = ("Speedup = peer time / sparsesnn time (higher is better); fwd = inference forward; "
          "bandwidth = bytes that must move / time, vs a tensor copy of the same size measured in "
          "this run.\n\n" + markdown_table(headers, rows))
    payload = {"device": device, "results": records}
    if device == "cpu" and sparsesnn.info()["extension"]:
        # In cache (2 MiB per tensor) the kernels are bound by arithmetic, not memory.
        floor = {f"T=32,N={n}": kernel_only(32, n) for n in (2**14, 2**18)}
        payload["kernel_only_ns_per_neuron_step"] = floor
        md += ("\n\nKernels alone (no dispatch/autograd/allocation), ns per neuron-step, 2 threads:\n\n"
               + markdown_table(["case", "fwd", "bwd", "fwd+bwd"],
                                [[k, v["fwd"], v["bwd"], v["fwd_bwd"]] for k, v in floor.items()]))
    path = write_results(f"lif_{device}", payload, md)
    plot(records, list(peer_makers), device)
    print(md)
    print(f"wrote {path}")


def plot(records, peer_names, device) -> None:
    plt = pyplot()
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
        ax.set_title(f"LIF {kind} ({device})")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"lif_{device}.png", dpi=110)


if __name__ == "__main__":
    main()
