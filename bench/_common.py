"""Timing, machine description and result writing shared by the benchmarks."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def pyplot():
    """``matplotlib.pyplot`` drawing to files only, or ``None`` (and a note) if not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    return plt


def quick_cli(doc: str) -> bool:
    """The benchmarks' shared start: tune the allocator (big outputs reuse freed heap blocks,
    for every library timed alike), parse ``--quick``, print what was built. Returns quick."""
    import argparse

    import sparsesnn

    sparsesnn.tune_allocator()
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweep")
    quick = parser.parse_args().quick
    print(sparsesnn.info())
    return quick


def timeit(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 7, min_time: float = 0.05) -> float:
    """Median wall time of ``fn()`` in seconds; each sample loops until ``min_time`` passes."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(min_time / once))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import sparsesnn

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sparsesnn": sparsesnn.info(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def copy_bandwidth(nbytes: int, device: str = "cpu") -> float:
    """Bytes/s of a plain tensor copy (read + write counted) of ``nbytes`` per side."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        dst.copy_(src)
        sync()

    return 2 * nbytes / timeit(run)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], markdown: str) -> Path:
    """Write ``bench/results/<name>.json`` and ``.md`` (with the machine description)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    m = payload["machine"]
    header = (f"# {name}\n\nMeasured {m['date']} on {m['cpu']} ({m['cores']} cores, "
              f"{m['torch_threads']} torch threads), torch {m['torch']}, "
              f"sparsesnn backend: {m['sparsesnn'].get('backend')} "
              f"(ISA {m['sparsesnn'].get('cpu_isa', '-')}).\n\n")
    (RESULTS / f"{name}.md").write_text(header + markdown + "\n")
    return RESULTS / f"{name}.md"
