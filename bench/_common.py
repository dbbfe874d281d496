"""Timing, process isolation, machine description and result writing shared by the benchmarks.

Every benchmark times what a user runs: the public API with default settings, one library per
fresh process (:func:`isolated`), so no library profits from another's allocator state or
import-time settings. The parent process only orchestrates and writes results; it imports
neither sparsesnn nor any peer library.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
AS_CALLED = ("Each library in its own process, public API, default settings; "
             "kernel-only figures are diagnostics, never the headline.")
# Worker exit code for "a library is not installed" (see _worker.py), so optional peers skip.
EXIT_IMPORT_ERROR = 3
THREADS_ENV = "SPARSESNN_BENCH_THREADS"
# timeit settings for --smoke: enough to exercise every code path, not to measure anything.
SMOKE_TIMING = {"warmup": 1, "repeat": 2, "min_time": 0.002}
# Every isolated run of this benchmark: target, wall seconds and what the child reported about
# itself (threads, libraries it imported, sparsesnn's allocator setting): recorded in the JSON.
PROCESSES: list[dict[str, Any]] = []


# ---- command line -------------------------------------------------------------------------
def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark shares; scripts add their own before parsing."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sweep")
    p.add_argument("--smoke", action="store_true", help="tiny sweep: checks the script runs (numbers meaningless)")
    p.add_argument("--threads", type=int, default=None, help="torch/kernel threads in every process (default: torch's)")
    return p


def start(args: argparse.Namespace) -> argparse.Namespace:
    """Apply ``--threads`` (children inherit it through :func:`isolated`), set ``args.size``
    ("smoke" | "quick" | "full") and print the machine. Returns ``args``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    m = machine()
    print(f"{describe(m)}\n{AS_CALLED}", flush=True)
    args.machine = m
    return args


# ---- processes ----------------------------------------------------------------------------
def isolated(target: str, *, optional: bool = False, env: Optional[dict[str, str]] = None,
             **kwargs: Any) -> Any:
    """Run ``module:function(**kwargs)`` in a fresh Python process and return its result.

    The child gets this process's environment (plus ``env``) and thread count; ``module`` is imported from
    ``bench/`` (or anywhere on the path). Its progress output is echoed here as it comes.
    Raises ``RuntimeError`` with the child's stderr if it fails; with ``optional``, a child
    that failed on an ImportError (a peer library not installed) returns ``None`` instead.
    """
    env = {**os.environ, **(env or {}), THREADS_ENV: str(torch.get_num_threads())}
    cmd = [sys.executable, str(BENCH / "_worker.py"), target, json.dumps(kwargs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err: list[str] = []

    def pump() -> None:  # echo progress live; keep it for the error message
        for line in proc.stderr:
            err.append(line)
            print(f"  [{target}] {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    out = proc.stdout.read()  # the child's stdout carries only its result line
    proc.wait()
    reader.join(5)
    if proc.returncode == EXIT_IMPORT_ERROR and optional:
        print(f"{target}: unavailable ({err[-1].strip() if err else 'import failed'})", flush=True)
        return None
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{target} failed (exit {proc.returncode}):\n{''.join(err[-40:])}")
    reply = json.loads(lines[-1])
    PROCESSES.append({"target": target, "seconds": round(time.perf_counter() - t0, 2), **reply["process"]})
    return reply["result"]


def generator(*key: Any) -> torch.Generator:
    """A generator seeded from ``key``, the same in every process (inputs built separately
    in each library's process must be identical)."""
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def spikes(shape: Sequence[int], density: float, *key: Any) -> torch.Tensor:
    """Binary fp32 spikes of ``density``, deterministic in ``(shape, density, key)``."""
    return (torch.rand(*shape, generator=generator("spikes", tuple(shape), density, *key)) < density).float()


# ---- timing -------------------------------------------------------------------------------
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


def fwd_bwd_time(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], s: torch.Tensor,
                 w: torch.Tensor, g: torch.Tensor, timing: dict) -> float:
    """Seconds of ``op(s, w).backward(g)`` through autograd, with grads for both the spikes
    and the weight (as inside an SNN: spikes come from a neuron that needs its gradient)."""
    sg, wp = s.clone().requires_grad_(True), w.clone().requires_grad_(True)

    def run():
        op(sg, wp).backward(g)
        sg.grad = wp.grad = None
    return timeit(run, **timing)


def copy_bandwidth(nbytes: int, device: str = "cpu") -> float:
    """Bytes/s of a plain tensor copy (read + write counted) of ``nbytes`` per side."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        dst.copy_(src)
        sync()

    return 2 * nbytes / timeit(run)


def copy_bandwidths(sizes: Sequence[int], device: str = "cpu") -> list[float]:
    """:func:`copy_bandwidth` for each byte count: run in a torch-only process."""
    return [copy_bandwidth(int(n), device) for n in sizes]


# ---- machine ------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_caches() -> dict[str, str]:
    """Per-core L1d/L2 and shared L3 sizes of cpu0, read now (sysfs, else ``lscpu``)."""
    out: dict[str, str] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level, kind, size = ((idx / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            out[f"L{level}" + ("d" if kind == "Data" else "")] = size
    if not out:
        try:
            text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("L1d cache", "L2 cache", "L3 cache"):
                out[name.split()[0]] = value.strip()
    return out


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def isa_flags() -> list[str]:
    """The vector/matrix ISA extensions the kernels (and MKL/oneDNN) may use on this CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def versions() -> dict[str, Optional[str]]:
    """Installed versions, read from package metadata (nothing is imported here)."""
    out = {}
    for name in ("torch", "sparsesnn", "spikingjelly", "snntorch", "norse"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def sparsesnn_info() -> dict[str, Any]:
    """``sparsesnn.info()`` as a fresh ``import sparsesnn`` gives it (run through isolated)."""
    import sparsesnn

    return sparsesnn.info()


def machine() -> dict[str, Any]:
    try:
        ext = isolated("_common:sparsesnn_info")
    except RuntimeError as exc:
        ext = {"error": str(exc)[-500:]}
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "caches": cpu_caches(),
        "isa": isa_flags(),
        "cores": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "versions": versions(),
        "sparsesnn": ext,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe(m: dict[str, Any]) -> str:
    """One paragraph naming the machine, for the console and the Markdown header."""
    caches = ", ".join(f"{k} {v}" for k, v in m["caches"].items()) or "caches unknown"
    ext = m["sparsesnn"]
    return (f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores; {caches}; ISA "
            f"{' '.join(m['isa']) or '-'}), {m['torch_threads']} threads per process, "
            f"load average {m['load_average'][0]:.2f}, torch {m['torch']}, sparsesnn "
            f"{m['versions'].get('sparsesnn')} (backend {ext.get('backend', '?')}, kernel ISA "
            f"{ext.get('cpu_isa', '-')}, allocator tuned at import: {ext.get('allocator_tuned', '?')}).")


# ---- output -------------------------------------------------------------------------------
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


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def header(name: str, m: dict[str, Any]) -> str:
    return f"# {name}\n\n{describe(m)}\n\n{AS_CALLED}\n\n"


def write_results(name: str, payload: dict[str, Any], markdown: str,
                  m: Optional[dict[str, Any]] = None) -> Path:
    """Write ``bench/results/<name>.json`` and ``.md`` (with the machine description and the
    processes that measured)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    m = m or machine()
    payload = {"machine": m, "method": AS_CALLED, **payload, "processes": PROCESSES}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (RESULTS / f"{name}.md").write_text(header(name, m) + markdown + "\n")
    return RESULTS / f"{name}.md"


# ---- break-even density -------------------------------------------------------------------
def crossing(densities: Sequence[float], speedups: Sequence[float]) -> Optional[float]:
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


def break_even(records: Sequence[dict], group: Sequence[str], ratios: dict[str, str]) -> list[dict]:
    """Per group of records (same values of the ``group`` fields, densities ascending), the
    density where each ratio field in ``ratios`` (label -> field) crosses 1; ``"> d"`` when
    event-driven wins up to the highest density ``d`` tried."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in group), []).append(r)
    out = []
    for key, sel in groups.items():
        dens = [r["density"] for r in sel]
        row = dict(zip(group, key))
        for label, field in ratios.items():
            c = crossing(dens, [r[field] for r in sel])
            row[label] = f"> {dens[-1]}" if c is None else round(c, 3)
        out.append(row)
    return out
