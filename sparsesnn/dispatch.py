"""Dense vs event-driven dispatch by measured spike density.

The event-driven kernels win below some spike density and lose above it; where exactly
depends on the machine (cores, caches, BLAS) and on the number of rows ``M`` (batch x time
for linear layers, batch x pixels for convolutions). :func:`calibrate` measures that
break-even density on this machine for a few ``M`` and caches it in a JSON file
(``~/.cache/sparsesnn/calibration.json``, or ``$SPARSESNN_CALIBRATION_FILE``); the modules
look it up per call and interpolate in ``log M``.

Where the modules get it (:func:`choose`), strongest first: the module's ``break_even``
argument, the environment variable ``SPARSESNN_BREAK_EVEN`` (``"0.2"`` for every op, or
``"linear=0.3,conv2d=0.15"``), else a measurement of the module's own shape: the first call
per layer shape and row-count octave runs both paths twice on its real input (alternating),
keeps the faster one's output and sets that shape's break-even to
``density * t_dense / t_event`` (event time grows with density, dense time does not; a call
at more than twice the measured density and near that break-even measures again, since the
event path's fixed cost makes a measurement at low density underestimate it). That
costs a few extra kernel calls once, instead of a calibration of seconds in the first forward,
and it holds for the shapes the model has, which one generic calibration does not (conv's
break-even moves with channels and image size). :func:`calibrate` and :func:`break_even`
remain as the machine-wide view (cached in the file; the modules do not read it).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import _ext

ENV_BREAK_EVEN = "SPARSESNN_BREAK_EVEN"
ENV_CACHE_FILE = "SPARSESNN_CALIBRATION_FILE"
OPS = ("linear", "conv2d")
_FORMAT = 2  # 2: crossings fixed (1 could record ~0 when only the lowest density was slow)

_lock = threading.Lock()
_calibrating = threading.Lock()  # held while a first-use calibration measures
_memory: dict[str, dict] = {}  # machine key -> {op: {"m": [...], "break_even": [...]}}
_probed: dict[tuple, tuple[float, float]] = {}  # (op, device, shape, M octave) -> (break-even, density measured at)
_MIN_PROBE_DENSITY = 0.002  # sparser calls run event-driven without measuring (almost no work)


def cache_path() -> Path:
    """Where calibrations are stored (one entry per machine key)."""
    env = os.environ.get(ENV_CACHE_FILE)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsesnn" / "calibration.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_keys: dict[tuple[str, int], str] = {}


def machine_key(device: str = "cpu") -> str:
    """What a calibration is valid for: device, CPU model / GPU name, threads, versions."""
    memo = (device, torch.get_num_threads())
    key = _keys.get(memo)
    if key is None:  # computed once per (device, threads): the modules look it up every call
        info = _ext.info()
        if device == "cuda":
            where = f"cuda:{torch.cuda.get_device_name(0) if torch.cuda.is_available() else '?'}"
        else:
            where = f"cpu:{_cpu_model()}:{info.get('cpu_isa', '?')}:threads={memo[1]}"
        key = _keys[memo] = f"{where}|torch={torch.__version__}|sparsesnn={info.get('version', 'reference')}"
    return key


def _parse_env(op: str) -> Optional[float]:
    raw = os.environ.get(ENV_BREAK_EVEN, "").strip()
    if not raw:
        return None
    try:
        if "=" not in raw:
            return float(raw)
        for part in raw.split(","):
            name, _, value = part.partition("=")
            if name.strip() == op:
                return float(value)
    except ValueError:
        raise ValueError(f"{ENV_BREAK_EVEN}: expected a number or 'linear=x,conv2d=y', got {raw!r}") from None
    return None


def _paired_ms(dense: Callable[[], object], event: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Fastest of ``repeats`` runs of each path, alternating dense and event-driven so both
    see the same machine load; on a shared machine the minimum is the steadiest estimate."""
    dense()  # warm-up (allocations, caches, lazy init)
    event()
    td, te = [], []
    for _ in range(repeats):
        for fn, out in ((dense, td), (event, te)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return min(td) * 1e3, min(te) * 1e3


def _crossing(densities: list[float], ratios: list[float]) -> float:
    """Density where event/dense time reaches 1, interpolated linearly at the last upward
    crossing (one noisy point at a low density does not end the search); the last density
    tried if event-driven is faster throughout; toward 0 if it is never faster."""
    if ratios and ratios[-1] < 1.0:
        return densities[-1]  # still faster at the highest density tried
    points = [(0.0, 0.0)] + list(zip(densities, ratios))
    for (d0, r0), (d1, r1) in zip(reversed(points[:-1]), reversed(points[1:])):
        if r0 < 1.0 <= r1:
            return d0 + (d1 - d0) * (1.0 - r0) / (r1 - r0)
    return densities[-1]


def _stop(ratios: list[float]) -> bool:
    """Two densities in a row clearly slower than dense: higher ones only cost time."""
    return len(ratios) >= 2 and min(ratios[-2:]) > 1.3


def _spikes(shape: tuple[int, ...], density: float, device: str, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, device="cpu") < density).float().to(device)


def _measure_linear(m: int, device: str, densities: list[float], repeats: int, width: int) -> float:
    from .functional import spike_linear

    gen = torch.Generator().manual_seed(m)
    w = torch.randn(width, width, generator=gen).to(device)
    wt = w.t().contiguous()
    ratios = []
    for d in densities:
        s = _spikes((m, width), d, device, gen)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        dense, event = _paired_ms(lambda: (torch.nn.functional.linear(s, w), sync()),
                                  lambda: (spike_linear(s, w, weight_t=wt, check_binary=False), sync()), repeats)
        ratios.append(event / dense)
        if _stop(ratios):
            break  # well past break-even; higher densities only cost time
    return _crossing(densities[: len(ratios)], ratios)


def _measure_conv2d(images: int, device: str, densities: list[float], repeats: int, width: int) -> float:
    from .functional import spike_conv2d
    from .ops.spike_conv2d import rearrange_weight

    gen = torch.Generator().manual_seed(images)
    w = (torch.randn(width, width, 3, 3, generator=gen) * 0.1).to(device)
    wr = rearrange_weight(w, 1)
    ratios = []
    for d in densities:
        s = _spikes((images, width, 16, 16), d, device, gen)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        dense, event = _paired_ms(lambda: (torch.nn.functional.conv2d(s, w, None, 1, 1), sync()),
                                  lambda: (spike_conv2d(s, w, None, 1, 1, weight_r=wr, check_binary=False), sync()),
                                  repeats)
        ratios.append(event / dense)
        if _stop(ratios):
            break
    return _crossing(densities[: len(ratios)], ratios)


def calibrate(ops: tuple[str, ...] = OPS, *, device: str = "cpu", quick: bool = False,
              save: bool = True, path: Optional[os.PathLike] = None) -> dict[str, dict]:
    """Measure the break-even spike density of the event-driven kernels on this machine.

    For each op and a few row counts ``M`` it times dense (``torch.nn.functional``) against
    event-driven on random spikes of increasing density and records where they cross.
    Results go to the cache file (see :func:`cache_path`) unless ``save=False``.

    Args:
        ops: subset of ``("linear", "conv2d")``.
        device: ``"cpu"`` or ``"cuda"``.
        quick: fewer sizes and repeats (well under a second; for tests and smoke runs).
    Returns:
        ``{op: {"m": [M, ...], "break_even": [density, ...]}}`` (``m`` for conv2d counts
        ``batch * H * W``).
    """
    for op in ops:
        if op not in OPS:
            raise ValueError(f"ops: expected a subset of {OPS}, got {op!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    densities = [0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0]
    repeats = 3 if quick else 5
    result: dict[str, dict] = {}
    with torch.no_grad():
        if "linear" in ops:
            ms = [64] if quick else [8, 128, 1024]
            width = 256 if quick else 1024
            result["linear"] = {"m": ms, "break_even": [_measure_linear(m, device, densities, repeats, width)
                                                         for m in ms]}
        if "conv2d" in ops:
            images = [2] if quick else [1, 8, 32]
            width = 16 if quick else 64
            result["conv2d"] = {"m": [n * 256 for n in images],
                                "break_even": [_measure_conv2d(n, device, densities, repeats, width)
                                               for n in images]}
    key = machine_key(device)
    with _lock:
        _memory.setdefault(key, {}).update(result)
        if save:
            _store(Path(path) if path else cache_path(), key, _memory[key])
    return result


def _store(path: Path, key: str, entry: dict) -> None:
    data = _load_file(path)
    data.setdefault("machines", {})[key] = dict(entry, measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    data["format"] = _FORMAT
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temporary file per writer (threads and processes), then an atomic rename:
    # readers never see half a file, and a crash mid-write leaves the old file in place
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    ms, bes = entry.get("m"), entry.get("break_even")
    return (isinstance(ms, list) and isinstance(bes, list) and 0 < len(ms) == len(bes)
            and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in ms)
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bes)
            and ms == sorted(ms))


def _load_file(path: Path) -> dict:
    """The cache file's contents; a corrupt file (or corrupt entries) is ignored with a warning,
    so a damaged cache never raises in a user's forward (the calibration is measured again)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        warnings.warn(f"sparsesnn: ignoring corrupt calibration file {path} ({exc})", RuntimeWarning, stacklevel=3)
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return {}
    machines = data.get("machines")
    if not isinstance(machines, dict):
        warnings.warn(f"sparsesnn: ignoring corrupt calibration file {path} (no 'machines' table)",
                      RuntimeWarning, stacklevel=3)
        return {}
    for key, ops in list(machines.items()):
        bad = [op for op in OPS if isinstance(ops, dict) and op in ops and not _valid_entry(ops[op])]
        if not isinstance(ops, dict) or bad:
            warnings.warn(f"sparsesnn: ignoring corrupt calibration entry {key!r} in {path}",
                          RuntimeWarning, stacklevel=3)
            del machines[key]
    return data


def _interpolate(entry: dict, m: int) -> float:
    ms, bes = entry["m"], entry["break_even"]
    if m <= ms[0]:
        return float(bes[0])
    for (m0, b0), (m1, b1) in zip(zip(ms, bes), zip(ms[1:], bes[1:])):
        if m <= m1:
            t = (math.log(m) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return float(b0 + t * (b1 - b0))
    return float(bes[-1])


def _calibrated(op: str, device: str) -> Optional[dict]:
    """The calibration entry of ``op`` on this machine (memory, else cache file), or None."""
    key = machine_key(device)
    with _lock:
        entry = _memory.get(key, {}).get(op)
        if entry is None:
            cached = _load_file(cache_path()).get("machines", {}).get(key, {})
            if op in cached:
                _memory.setdefault(key, {}).update({k: v for k, v in cached.items() if k in OPS})
                entry = cached[op]
    return entry


def _given(op: str, override: Optional[float]) -> Optional[float]:
    """The break-even from the argument or the environment; None if neither sets one."""
    return float(override) if override is not None else _parse_env(op)


def choose(op: str, density: float, m: int, device: str, override: Optional[float], shape: tuple,
           dense: Callable[[], Any], event: Callable[[], Any]) -> tuple[str, Any]:
    """Runs the path this call should take: ``("event" | "dense", its output)``.

    ``shape`` identifies the layer geometry (with ``m``'s octave, the key of a measurement);
    ``dense`` and ``event`` compute the same result. See the module docstring for the order
    of the sources of the break-even."""
    be = _given(op, override)
    if be is None:
        key = (op, device, shape, max(1, int(m)).bit_length())
        probed = _probed.get(key)
        if probed is None:
            if density < _MIN_PROBE_DENSITY:
                return "event", event()
            return _probe(key, density, dense, event)
        be, at = probed
        # The estimate assumes event time grows in proportion to density; the event path's
        # fixed cost makes it too low when measured at a much sparser call. Measure again
        # where it decides (density near or above it) and the last measurement was at less
        # than half this density: at most a few times per key, each closer to the truth.
        if density > 2 * at and density > be / 2:
            return _probe(key, density, dense, event)
    return ("event", event()) if density < be else ("dense", dense())


def _probe(key: tuple, density: float, dense: Callable[[], Any], event: Callable[[], Any]) -> tuple[str, Any]:
    """Times both paths twice (alternating; the first run of each pays one-time setup), keeps
    the faster's output and records this shape's break-even density."""
    times: dict[str, float] = {"event": math.inf, "dense": math.inf}
    outs: dict[str, Any] = {}
    for name, fn in (("event", event), ("dense", dense)) * 2:
        t0 = time.perf_counter()
        outs[name] = fn()
        times[name] = min(times[name], time.perf_counter() - t0)
    be = min(1.0, density * times["dense"] / max(times["event"], 1e-9))
    with _lock:
        _probed[key] = (be, density)
    best = "event" if times["event"] <= times["dense"] else "dense"
    return best, outs[best]


def break_even(op: str, m: int = 256, device: str = "cpu", override: Optional[float] = None) -> float:
    """Spike density below which the event-driven kernel of ``op`` is faster than dense, for
    ``m`` rows on ``device``: the override, else ``$SPARSESNN_BREAK_EVEN``, else the cached
    calibration (measured now, once, if there is none). The modules do not call this; they
    use :func:`choose`, which measures their own shapes instead of calibrating."""
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    if override is not None:
        return float(override)
    env = _parse_env(op)
    if env is not None:
        return env
    key = machine_key(device)
    entry = _calibrated(op, device)
    if entry is None:
        with _calibrating:  # concurrent first use: one thread measures, the others reuse it
            with _lock:
                entry = _memory.get(key, {}).get(op)
            if entry is None:
                entry = calibrate((op,), device=device)[op]
    return _interpolate(entry, max(1, int(m)))


def use_event(op: str, density: float, m: int, device: str, override: Optional[float] = None) -> bool:
    """True when the event-driven kernel should serve a call at this measured density."""
    return density < break_even(op, m, device, override)
