"""Data loaders: digits (bundled) and MNIST IDX files written by the test."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from sparsesnn.data import load_digits, load_mnist, loaders, read_idx


def _write_idx(path, arr: np.ndarray, gz: bool = False):
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)


def _mnist_dir(tmp_path, n_train=20, n_test=7, gz=False):
    rng = np.random.default_rng(0)
    xs = {k: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8) for k, n in (("train", n_train), ("t10k", n_test))}
    ys = {k: (np.arange(n) % 10).astype(np.uint8) for k, n in (("train", n_train), ("t10k", n_test))}
    for k in ("train", "t10k"):
        _write_idx(tmp_path / f"{k}-images-idx3-ubyte", xs[k], gz)
        _write_idx(tmp_path / f"{k}-labels-idx1-ubyte", ys[k], gz)
    return xs, ys


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
    xs, ys = _mnist_dir(tmp_path, gz=gz)
    split = load_mnist(str(tmp_path))
    assert split.x_train.shape == (20, 784) and split.x_test.shape == (7, 784)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert torch.allclose(split.x_train[3], torch.from_numpy(xs["train"][3].reshape(-1) / 255.0).float())
    assert split.y_test.tolist() == ys["t10k"].tolist()
    assert split.features == 784 and split.classes == 10
    lim = load_mnist(str(tmp_path), limit_train=5, limit_test=3)
    assert lim.x_train.shape[0] == 5 and lim.x_test.shape[0] == 3


def test_read_idx_shapes_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", a)
    assert np.array_equal(read_idx(str(tmp_path / "a")), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="^path: "):
        read_idx(str(tmp_path / "bad"))
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(str(tmp_path / "short"))


def test_mnist_missing_files(tmp_path):
    with pytest.raises(ValueError, match="^path: "):
        load_mnist(str(tmp_path))
    with pytest.raises(ValueError, match="^path: "):
        load_mnist(str(tmp_path / "does-not-exist"))


def test_digits_split():
    s = load_digits(test_fraction=0.2, seed=0)
    assert s.features == 64 and s.classes == 10
    assert len(s.y_train) + len(s.y_test) == 1797
    assert float(s.x_train.min()) >= 0.0 and float(s.x_train.max()) <= 1.0
    assert set(s.y_test.tolist()) == set(range(10))  # stratified
    train, test = loaders(s, batch_size=100)
    x, y = next(iter(train))
    assert x.shape == (100, 64) and y.shape == (100,)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)
