"""sparsesnn.events: readers on files written here in the exact formats, and time binning."""
import numpy as np
import pytest
import torch

from sparsesnn import events


def _write_nmnist(path, ev):
    b = np.zeros((len(ev), 5), np.uint8)
    b[:, 0], b[:, 1] = ev["x"], ev["y"]
    t = ev["t"].astype(np.int64)
    b[:, 2] = (ev["p"].astype(np.int64) << 7) | (t >> 16)
    b[:, 3], b[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    b.tofile(path)


def test_nmnist_roundtrip_and_frames(tmp_path):
    rng = np.random.default_rng(0)
    ev = np.zeros(500, events.EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, 500), rng.integers(0, 34, 500)
    ev["p"], ev["t"] = rng.integers(0, 2, 500), np.sort(rng.integers(0, 300_000, 500))
    ev["t"][-1] = (1 << 23) - 1  # largest 23-bit timestamp survives
    _write_nmnist(tmp_path / "00001.bin", ev)
    back = events.read_nmnist(str(tmp_path / "00001.bin"))
    assert np.array_equal(back, ev)
    f = events.to_frames([back, back[:10]], T=4)
    assert f.shape == (4, 2, 2, 34, 34) and f[:, 0].sum() == 500 and f[:, 1].sum() == 10
    i = 123
    k = int(ev["t"][i] * 4 // (ev["t"].max() + 1))
    assert f[k, 0, ev["p"][i], ev["y"][i], ev["x"][i]] >= 1
    assert set(events.to_frames(back, 4, binary=True).unique().tolist()) <= {0.0, 1.0}


def test_nmnist_bad_file(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"123456")
    with pytest.raises(ValueError, match="not an N-MNIST"):
        events.read_nmnist(str(tmp_path / "bad.bin"))


def test_shd_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "shd.h5"
    times = [np.array([0.0, 0.01, 0.5], np.float32), np.array([0.2], np.float32)]
    units = [np.array([3, 699, 3], np.uint16), np.array([10], np.uint16)]
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", data=np.array(times, dtype=object), dtype=h5py.vlen_dtype(np.float32))
        f.create_dataset("spikes/units", data=np.array(units, dtype=object), dtype=h5py.vlen_dtype(np.uint16))
        f.create_dataset("labels", data=np.array([7, 2], np.uint16))
    evs, labels = events.read_shd(str(path))
    assert labels.tolist() == [7, 2] and evs[0]["x"].tolist() == [3, 699, 3]
    s = events.to_spikes(evs, T=10, n_units=700, duration=1e6)  # 1 s in microseconds
    assert s.shape == (10, 2, 700)
    assert s[0, 0, 3] == 1 and s[0, 0, 699] == 1 and s[5, 0, 3] == 1 and s[2, 1, 10] == 1
    assert s.sum() == 4


def test_tonic_style_array_and_errors():
    ev = np.array([(1, 2, 5, 1), (0, 0, 15, 0)], dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    f = events.to_frames(ev, T=2, sensor_size=(4, 4, 2), duration=20)
    assert f.shape == (2, 2, 4, 4) and f[0, 1, 2, 1] == 1 and f[1, 0, 0, 0] == 1
    with pytest.raises(ValueError, match=r"^events: expected a structured array .*missing \['y', 'p'\]"):
        events.to_frames(np.zeros(3, [("x", "i8"), ("t", "i8")]), 2)
    with pytest.raises(ValueError, match="T: expected"):
        events.to_spikes(ev, 0, 4)
