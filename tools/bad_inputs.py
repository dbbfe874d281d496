"""Tries bad inputs on the public entry points and prints what each gets (a Markdown table).

    python tools/bad_inputs.py
Every row is produced by running the call now; nothing is hard-coded but the inputs.
"""
import io
import os
import pickle
import tempfile
from contextlib import redirect_stderr

import torch
from torch import nn

from sparsesnn import FixedPoint, deploy, model_file
from sparsesnn import functional as F
from sparsesnn.cli import main
from sparsesnn.nn import LIF, PackedSpikingConv2d, PackedSpikingLinear, SpikingConv2d, SpikingLinear
from sparsesnn.quant import QuantSpec, quantize


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sparsesnn-pwned",))


def _file(data: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".ssnn")
    os.write(fd, data)
    os.close(fd)
    return path


def _valid() -> bytes:
    return model_file.dumps(nn.Sequential(PackedSpikingLinear.from_float(nn.Linear(8, 4), 4), LIF()))


def _flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x10
    return bytes(b)


def _cli(*argv):
    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(["demo", *argv])
    if rc == 2:
        raise ValueError(err.getvalue().strip().removeprefix("sparsesnn demo: error: "))
    return rc


CASES = [
    ("deploy.load", "pickle file with a __reduce__ payload", lambda: deploy.load(_file(pickle.dumps({"m": _Payload()})))),
    ("deploy.load", "torch.save file (old format)", lambda: deploy.load(_file(_torch_bytes()))),
    ("deploy.load", "truncated file (half)", lambda: deploy.load(_file(_valid()[: len(_valid()) // 2]))),
    ("deploy.load", "bit flip in the header length", lambda: deploy.load(_file(_flip(_valid(), 9)))),
    ("deploy.load", "unknown version", lambda: deploy.load(_file(_valid().replace(b'"version":1', b'"version":7')))),
    ("deploy.load", "unknown module type", lambda: deploy.load(_file(_valid().replace(b"sparsesnn.LIF", b"builtins.exec")))),
    ("deploy.load", "shape in description != stored", lambda: deploy.load(_file(_valid().replace(b'"out_features":4', b'"out_features":5')))),
    ("deploy.save", "unregistered module type", lambda: deploy.save(nn.Sequential(nn.Bilinear(2, 2, 2)), tempfile.mktemp())),
    ("deploy.convert_legacy", "without trust=True", lambda: deploy.convert_legacy("x.pt", "y.ssnn")),
    ("sparsesnn demo", "--bits 7", lambda: _cli("--bits", "7")),
    ("sparsesnn demo", "--T 0", lambda: _cli("--T", "0")),
    ("sparsesnn demo", "--sparsity 1.5", lambda: _cli("--sparsity", "1.5")),
    ("PackedSpikingLinear", "10^6 x 10^6 weight", lambda: PackedSpikingLinear(10**6, 10**6, spec=4)),
    ("SpikingLinear", "10^6 x 10^6 weight", lambda: SpikingLinear(10**6, 10**6)),
    ("PackedSpikingConv2d", "padding=300000 at forward", lambda: PackedSpikingConv2d(2, 4, 3, padding=300000, spec=4)(torch.zeros(1, 2, 4, 4))),
    ("SpikingConv2d", "padding=300000 at forward", lambda: SpikingConv2d(2, 4, 3, padding=300000)(torch.zeros(1, 2, 4, 4))),
    ("functional.spike_conv2d", "padding=300000", lambda: F.spike_conv2d(torch.zeros(1, 2, 4, 4), torch.zeros(4, 2, 3, 3), padding=300000)),
    ("functional.lif", "tau=nan", lambda: F.lif(torch.zeros(2, 3), tau=float("nan"))),
    ("functional.lif", "v0 of the wrong shape", lambda: F.lif(torch.zeros(2, 3), torch.zeros(4))),
    ("functional.spike_linear", "non-binary input", lambda: F.spike_linear(torch.full((2, 3), 0.5), torch.zeros(4, 3))),
    ("quantize", "weight with K == 0 (edge case: empty result expected)", lambda: quantize(torch.zeros(3, 0), QuantSpec("int4"))),
    ("FixedPoint", "bits=40", lambda: FixedPoint(40, 8)),
]


def _torch_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"format": "sparsesnn.deployed/1", "model": _Payload()}, buf)
    return buf.getvalue()


if __name__ == "__main__":
    if os.path.exists("/tmp/sparsesnn-pwned"):
        os.unlink("/tmp/sparsesnn-pwned")
    print("| Entry point | Bad input | Result |\n|---|---|---|")
    for fn, what, call in CASES:
        try:
            call()
            res = "accepted (no error)"
        except Exception as exc:  # recorded, not hidden: the table shows the type
            msg = str(exc).replace("|", "\\|").replace("\n", " ")
            res = f"`{type(exc).__name__}`: {msg[:110]}{'...' if len(msg) > 110 else ''}"
        print(f"| `{fn}` | {what} | {res} |")
    print(f"\npayload executed: {os.path.exists('/tmp/sparsesnn-pwned')}")
