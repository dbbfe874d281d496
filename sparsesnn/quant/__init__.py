"""Quantizers, rounding schemes, fake-quant (STE) modules and the low-bit packing formats."""
from .fake_quant import FakeQuantize, FakeQuantLinear, fake_quantize
from .packing import code_range, pack, row_bytes, storage_bits, unpack
from .quantizers import dequantize, num_groups, quantize
from .rounding import round_values
from .spec import FORMATS, ROUNDINGS, QuantSpec, as_spec

__all__ = [
    "QuantSpec", "as_spec", "FORMATS", "ROUNDINGS", "quantize", "dequantize", "num_groups",
    "round_values", "pack", "unpack", "storage_bits", "code_range", "row_bytes",
    "fake_quantize", "FakeQuantize", "FakeQuantLinear",
]
