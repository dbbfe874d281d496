"""Writer of the plan file format (specified in ``csrc/runtime/format.h``, read by the C loader)."""
from __future__ import annotations

import struct
import zlib
from typing import Optional, Sequence

import torch
from torch import Tensor

MAGIC = b"SSNNPLAN"
VERSION = 1

# Op kinds and tensor dtype codes of format.h.
(ENCODE_THRESHOLD, REPEAT, LINEAR, CONV2D, NEURON, FLATTEN, MEAN_T, MAX_POOL2D, AVG_POOL2D, SAVE,
 ADD, LOAD, MUL, IAND, ADAPTIVE_AVG_POOL2D) = range(1, 16)
_DTYPES = {torch.float32: 0, torch.int32: 1, torch.uint16: 2, torch.uint8: 3, torch.int8: 4}


class Payload:
    """Little-endian field writer for one op's payload."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u32(self, *vals: int) -> "Payload":
        self.parts.append(struct.pack(f"<{len(vals)}I", *(int(v) for v in vals)))
        return self

    def f32(self, *vals: float) -> "Payload":
        self.parts.append(struct.pack(f"<{len(vals)}f", *(float(v) for v in vals)))
        return self

    def tensor(self, t: Optional[Tensor], dtype: torch.dtype = torch.float32) -> "Payload":
        """``t`` flattened as ``dtype`` (None: an empty tensor)."""
        if t is None:
            t = torch.empty(0, dtype=dtype)
        if t.dtype != dtype:
            raise ValueError(f"tensor: expected dtype {dtype}, got {t.dtype}")
        t = t.detach().cpu().contiguous().reshape(-1)
        self.parts.append(struct.pack("<BQ", _DTYPES[dtype], t.numel()))
        self.parts.append(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def write_plan(T: int, input_time_major: bool, input_dims: Sequence[int],
               ops: Sequence[tuple[int, bytes]]) -> bytes:
    """The whole file image: header, ops ``(kind, payload)``, CRC-32 trailer."""
    head = [MAGIC, struct.pack("<5I", VERSION, 0, T, int(input_time_major), len(input_dims)),
            struct.pack(f"<{len(input_dims)}q", *input_dims), struct.pack("<I", len(ops))]
    body = b"".join(head + [struct.pack("<IQ", kind, len(p)) + p for kind, p in ops])
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)
