"""Event-camera / spike datasets: readers for the raw formats and time binning to tensors.

Events are tonic-compatible structured numpy arrays with fields ``x``, ``y``, ``t`` (integer
microseconds), ``p`` (0/1); SHD's 1-D events use ``x`` for the unit. AEDAT4 is not supported:
no maintained, dependency-light reader exists to build on (convert with ``dv-processing`` or
``tonic`` and pass the structured array).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["EVENT_DTYPE", "read_nmnist", "read_shd", "to_frames", "to_spikes"]

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
NMNIST_SENSOR = (34, 34, 2)  # (width, height, polarities)


def read_nmnist(path: str) -> np.ndarray:
    """One N-MNIST / N-Caltech101 ``.bin`` file: 5 bytes per event, ``x`` (8 bit), ``y``
    (8 bit), polarity (1 bit) and timestamp in microseconds (23 bit), big-endian."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(f"path: {path} is not an N-MNIST .bin file (size {raw.size} is not a "
                         "multiple of 5 bytes)")
    r = raw.reshape(-1, 5).astype(np.int64)
    ev = np.empty(len(r), EVENT_DTYPE)
    ev["x"], ev["y"] = r[:, 0], r[:, 1]
    ev["p"] = r[:, 2] >> 7
    ev["t"] = ((r[:, 2] & 0x7F) << 16) | (r[:, 3] << 8) | r[:, 4]
    return ev


def read_shd(path: str, indices: Optional[Sequence[int]] = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Spiking Heidelberg Digits / SSC HDF5 file: ``spikes/times`` (seconds), ``spikes/units``
    and ``labels``. Returns (events per sample with ``x`` = unit, ``t`` in microseconds;
    labels). Needs h5py."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading SHD needs h5py: pip install h5py") from e
    with h5py.File(path, "r") as f:
        for key in ("spikes/times", "spikes/units", "labels"):
            if key not in f:
                raise ValueError(f"path: {path} is not an SHD file (no {key!r} dataset)")
        times, units, labels = f["spikes/times"], f["spikes/units"], np.asarray(f["labels"])
        idx = range(len(labels)) if indices is None else indices
        out = []
        for i in idx:
            tt, uu = np.asarray(times[i]), np.asarray(units[i])
            ev = np.zeros(len(tt), EVENT_DTYPE)
            ev["x"], ev["t"], ev["p"] = uu, np.round(tt * 1e6), 1
            out.append(ev)
        return out, labels[list(idx)]


def _bins(t: np.ndarray, T: int, duration: Optional[float]) -> np.ndarray:
    span = float(duration) if duration is not None else float(t.max()) + 1.0 if len(t) else 1.0
    if not span > 0:
        raise ValueError(f"duration: expected > 0, got {duration}")
    b = np.floor(t.astype(np.float64) * T / span).astype(np.int64)
    return b


def _as_list(events) -> tuple[list[np.ndarray], bool]:
    if isinstance(events, np.ndarray):
        return [events], True
    return list(events), False


def _check_fields(ev: np.ndarray, fields: str) -> None:
    names = ev.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise ValueError(f"events: expected a structured array with fields {list(fields)}, "
                         f"missing {missing} (got fields {list(names)})")


def to_frames(events: Union[np.ndarray, Sequence[np.ndarray]], T: int,
              sensor_size: tuple[int, int, int] = NMNIST_SENSOR, *,
              duration: Optional[float] = None, binary: bool = False) -> Tensor:
    """Bin events into ``T`` frames of event counts ``[T, B, P, H, W]`` (``[T, P, H, W]``
    for one array). ``sensor_size`` is ``(W, H, P)`` as tonic; ``duration`` in the units of
    ``t`` (default: each sample's last timestamp + 1); events after it are dropped.
    ``binary``: 1 where any event fell (spike input)."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    evs, single = _as_list(events)
    W, H, P = sensor_size
    out = torch.zeros(T, len(evs), P, H, W)
    for b, ev in enumerate(evs):
        _check_fields(ev, "xytp")
        k = _bins(ev["t"], T, duration)
        p = np.clip(ev["p"].astype(np.int64), 0, P - 1)
        keep = (k >= 0) & (k < T) & (ev["x"] < W) & (ev["y"] < H)
        flat = (((k * P + p) * H + ev["y"]) * W + ev["x"])[keep]
        counts = np.bincount(flat, minlength=T * P * H * W).reshape(T, P, H, W)
        out[:, b] = torch.from_numpy(counts).float()
    if binary:
        out = (out > 0).float()
    return out[:, 0] if single else out


def to_spikes(events: Union[np.ndarray, Sequence[np.ndarray]], T: int, n_units: int, *,
              duration: Optional[float] = None) -> Tensor:
    """Bin 1-D events (``x`` = unit, e.g. SHD's 700 channels) into binary spikes
    ``[T, B, n_units]`` (``[T, n_units]`` for one array)."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    evs, single = _as_list(events)
    out = torch.zeros(T, len(evs), n_units)
    for b, ev in enumerate(evs):
        _check_fields(ev, "xt")
        k = _bins(ev["t"], T, duration)
        keep = (k >= 0) & (k < T) & (ev["x"] >= 0) & (ev["x"] < n_units)
        out[k[keep], b, ev["x"][keep].astype(np.int64)] = 1.0
    return out[:, 0] if single else out
