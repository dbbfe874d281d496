"""Small GPU timing of every sparsesnn CUDA op against the dense torch (cuBLAS/cuDNN) call a
user would make instead; run by tools/gpu_check.sh. Writes gpu_bench.json and gpu_bench.md
into the folder given as the first argument. Times are CUDA-event medians, public API,
default settings; the spike density is 10% (a typical SNN layer)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import torch

import sparsesnn
from sparsesnn import functional as SF
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear


def cuda_time(fn: Callable[[], object], repeat: int = 20) -> float:
    """Median milliseconds of fn() measured with CUDA events (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def cases(density: float = 0.1):
    g = torch.Generator(device="cuda").manual_seed(0)
    T, B = 8, 64
    x = torch.randn(T, B, 4096, device="cuda", generator=g) + 0.4
    yield "lif T8 B64 N4096", lambda: SF.lif(x), lambda: _torch_lif(x)
    s = (torch.rand(T * B, 2048, device="cuda", generator=g) < density).float()
    w = torch.randn(1024, 2048, device="cuda", generator=g)
    yield "spike_linear 512x2048->1024", lambda: SF.spike_linear(s, w, check_binary=False), \
        lambda: torch.nn.functional.linear(s, w)
    lin = torch.nn.Linear(2048, 1024)
    for fmt, mask in (("int4", None), ("int8", torch.rand(1024, 2048) < 0.2)):
        m = PackedSpikingLinear.from_float(lin, fmt, mask=mask).cuda()
        wd = m.dequantized_weight()
        name = f"packed_linear {fmt}{' pruned 80%' if mask is not None else ''}"
        yield name, lambda m=m: m(s), lambda wd=wd: torch.nn.functional.linear(s, wd)
    sc = (torch.rand(T * 8, 64, 32, 32, device="cuda", generator=g) < density).float()
    wc = torch.randn(64, 64, 3, 3, device="cuda", generator=g)
    yield "spike_conv2d 64x32x32 3x3", lambda: SF.spike_conv2d(sc, wc, None, padding=1, check_binary=False), \
        lambda: torch.nn.functional.conv2d(sc, wc, padding=1)
    pc = PackedSpikingConv2d.from_float(torch.nn.Conv2d(64, 64, 3, padding=1), "int4").cuda()
    wpc = pc.dequantized_weight()
    yield "packed_conv2d int4", lambda: pc(sc), lambda: torch.nn.functional.conv2d(sc, wpc, padding=1)


def _torch_lif(x: torch.Tensor):
    """The plain PyTorch loop a user would write (SpikingJelly's torch backend)."""
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) * 0.5
        s = (h >= 1.0).float()
        out.append(s)
        v = h * (1 - s)
    return torch.stack(out), v


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    info = sparsesnn.info()
    rows = []
    with torch.no_grad():
        for name, ours, dense in cases():
            t_ours, t_dense = cuda_time(ours), cuda_time(dense)
            rows.append({"op": name, "sparsesnn_ms": t_ours, "torch_ms": t_dense,
                         "speedup": t_dense / t_ours if t_ours > 0 else None})
            print(f"{name:32s} sparsesnn {t_ours:8.3f} ms  torch {t_dense:8.3f} ms  x{t_dense / t_ours:6.2f}")
    payload = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "info": info,
               "density": 0.1, "results": rows}
    (out_dir / "gpu_bench.json").write_text(json.dumps(payload, indent=2, default=str))
    md = [f"GPU: {payload['gpu']}, torch {torch.__version__}, spike density 10%", "",
          "| op | sparsesnn ms | torch dense ms | speedup |", "|---|---:|---:|---:|"]
    md += [f"| {r['op']} | {r['sparsesnn_ms']:.3f} | {r['torch_ms']:.3f} | {r['speedup']:.2f} |" for r in rows]
    (out_dir / "gpu_bench.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
