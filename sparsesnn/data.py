"""Datasets for the demo: scikit-learn digits (bundled, no download) and MNIST IDX files.

Both return float32 features in ``[0, 1]`` of shape ``[n, features]`` and int64 labels ``[n]``.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass
class Split:
    x_train: torch.Tensor  # [n_train, features] float32 in [0, 1]
    y_train: torch.Tensor  # [n_train] int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits (1797 images, 64 features scaled by 1/16), stratified split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as _load
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the digits demo needs scikit-learn: pip install 'sparsesnn[demo]'") from exc
    d = _load()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_fraction,
                                          random_state=seed, stratify=d.target)
    return Split(torch.from_numpy(xtr), torch.from_numpy(ytr).long(),
                 torch.from_numpy(xte), torch.from_numpy(yte).long(), "digits")


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``): magic ``0 0 dtype ndim``, big-endian dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"path: {path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES:
        raise ValueError(f"path: {path} has unknown IDX data type 0x{dtype_code:02x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset < count * dtype.itemsize:
        raise ValueError(f"path: {path} is truncated: expected {count} items of shape {dims}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def _find(path: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(path, name)
        if os.path.exists(p):
            return p
    raise ValueError(f"path: {path} has no {stem}[.gz] (expected the four MNIST IDX files)")


def load_mnist(path: str, limit_train: int | None = None, limit_test: int | None = None) -> Split:
    """MNIST from the four IDX files in directory ``path`` (train-/t10k- images/labels)."""
    if not os.path.isdir(path):
        raise ValueError(f"path: expected a directory with MNIST IDX files, got {path!r}")
    arrays = [read_idx(_find(path, s)) for s in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    xtr, ytr, xte, yte = arrays
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError(f"path: image/label counts differ in {path}")
    xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    xte, yte = xte[:limit_test], yte[:limit_test]

    def feats(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    return Split(feats(xtr), torch.from_numpy(ytr.astype(np.int64)),
                 feats(xte), torch.from_numpy(yte.astype(np.int64)), "mnist")


def loaders(split: Split, batch_size: int = 64, seed: int = 0, eval_batch_size: int = 512):
    """(train loader shuffled with ``seed``, test loader) over in-memory tensors."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=batch_size,
                       shuffle=True, generator=g)
    test = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=eval_batch_size)
    return train, test
