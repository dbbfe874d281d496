"""Deployment layers over packed low-bit and/or pruned weights.

``PackedSpikingLinear`` / ``PackedSpikingConv2d`` are built from a trained float layer with
``from_float(layer, spec, scale=..., mask=...)``. Only the packed buffers are stored (and
saved by ``state_dict``), so the memory saving is real; ``model_bytes()`` is their byte count.
Binary spike input runs the integer event-driven kernels (codes summed in integers, scale
applied once per output); analog input runs the dense-path packed kernels.
"""
from __future__ import annotations

import functools

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..ops import _checks as C
from ..ops._fast import eager_cpu
from ..ops.conv2d_plan import PlanCache, build_plan
from ..ops.pack import pack_stream
from ..ops.packed_conv2d import dequantized_weight as _conv_dequant
from ..ops.packed_conv2d import packed_conv2d_kernel, packed_conv2d_op, packed_conv2d_unchecked
from ..ops.packed_linear import dequantized_weight as _lin_dequant
from ..ops.packed_linear import packed_linear_cpu, packed_linear_op
from ..ops.pruned_conv2d import dequantized_weight as _pruned_conv_dequant
from ..ops.pruned_conv2d import pruned_conv2d_kernel, pruned_conv2d_op, pruned_conv2d_unchecked
from ..ops.pruned_linear import dequantized_weight as _pruned_dequant
from ..ops.pruned_linear import pruned_linear_cpu, pruned_linear_op
from ..ops.spike_linear import spike_stats
from ..quant import QuantSpec, as_spec, pack, quantize

__all__ = ["PackedSpikingLinear", "PackedSpikingConv2d", "PRUNED_LAYOUT_MIN_SPARSITY"]

# from_float without a mask switches to the compressed-row layout when at least this fraction
# of the weights is exactly zero (below it the index overhead outweighs the skipped synapses).
PRUNED_LAYOUT_MIN_SPARSITY = 0.5
_INPUT_MODES = ("auto", "spike", "analog")
_INPUT_DTYPES = frozenset((torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.bool,
                           torch.uint8))
_BUFFERS = ("weights", "scale", "bias", "row_ptr", "index", "values")


def _float_weight(layer: nn.Module, name: str) -> tuple[Tensor, Optional[Tensor]]:
    w = getattr(layer, "weight", None)
    if not isinstance(w, Tensor):
        raise ValueError(f"{name}: expected a module with a .weight tensor, got {type(layer).__name__}")
    w = w.detach().float()
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name}.weight: contains NaN or inf values; cannot pack")
    b = getattr(layer, "bias", None)
    if b is not None:
        b = b.detach().float().contiguous()
        if b.shape != (w.shape[0],):
            raise ValueError(f"{name}.bias: expected shape ({w.shape[0]},), got {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError(f"{name}.bias: contains NaN or inf values")
    return w, b


def _check_mask(mask: Any, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask: expected a bool tensor of shape {shape}, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask: expected shape {tuple(shape)} (the weight's), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask: expected a bool (0/1) tensor, got dtype {mask.dtype}")
        mask = mask.bool()
    return mask


class _PackedBase(nn.Module):
    """Buffers + config shared by the packed layers; state_dict carries the config as extra
    state so ``load_state_dict`` rebuilds an identical module (buffers are resized)."""

    def _empty_buffers(self) -> None:
        for name in _BUFFERS:
            self.register_buffer(name, None)

    def _config(self) -> dict:
        raise NotImplementedError

    def get_extra_state(self) -> dict:
        return self._config()

    def set_extra_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict):
            self.set_extra_state(extra)
        # Buffers differ in shape (and presence) between formats and pruning levels: adopt the
        # saved ones as they are instead of copying into the current shapes.
        device = next((b.device for b in self._buffers.values() if b is not None), None)
        for name in _BUFFERS:
            key = prefix + name
            if key in state_dict:
                self._buffers[name] = state_dict[key].detach().clone().to(device)
            elif isinstance(extra, dict):
                self._buffers[name] = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def model_bytes(self) -> int:
        """Real bytes of the stored buffers: packed/fp32 weights, scales, indices, bias."""
        return sum(int(b.numel() * b.element_size()) for n, b in self._buffers.items()
                   if n in _BUFFERS and b is not None)

    @property
    def spec(self) -> Optional[QuantSpec]:
        if self.format == "fp32":
            return None
        return QuantSpec(self.format, group_size=self.group_size or None)

    def _spike_mode(self, x: Tensor) -> bool:
        if self.input_mode == "analog":
            return False
        if x.is_cuda:
            # No host read on CUDA (it would stall the stream and break graph capture): the CUDA
            # kernels sum inputs equal to 1 in integers and any other value in fp32, so the
            # spike kernel is right for analog input too, and it walks every input whatever
            # the density, so dense_threshold has nothing to choose. The binary check of
            # input_mode="spike" is opt-in there (SPARSESNN_CUDA_CHECKS=1).
            if self.input_mode == "spike" and C.data_checks(x):
                C.check_binary("input", x)
            return True
        if not x.numel():
            return True
        nonzero, nonbinary = spike_stats(x)  # one pass: binarity and density
        if nonbinary:
            if self.input_mode == "spike":
                C.check_binary("input", x)
            return False
        # Above the measured break-even density the dense-path kernel is faster.
        return self.dense_threshold >= 1.0 or nonzero / x.numel() <= self.dense_threshold


@functools.lru_cache(maxsize=None)
def _bits(fmt: str) -> int:
    return 32 if fmt == "fp32" else QuantSpec(fmt).storage_bits


class PackedSpikingLinear(_PackedBase):
    """Linear layer over packed low-bit and/or pruned weights (inference).

    Layouts: dense packed rows ``weights`` uint8 ``[K, ceil(N * bits / 8)]`` (or fp32
    ``[K, N]`` without a spec), or -- with a mask -- compressed rows by input neuron
    (``row_ptr [K+1]`` int32, ``index [nnz]`` uint16/int32, ``values`` packed codes or fp32).
    ``scale`` fp32 ``[N, G]``. Forward: spikes ``[T, B, K]`` or ``[..., K]`` -> ``[..., N]``,
    equal to ``F.linear(s, dequantize(codes, scale) * mask, bias)``.

    Args:
        input_mode: ``auto`` (binary input -> integer event-driven kernel, else dense path),
            ``spike`` (binary required), ``analog`` (always the dense path).
        dense_threshold: spike density above which binary input also takes the dense path.
    """

    def __init__(self, in_features: int = 1, out_features: int = 1, spec: Union[QuantSpec, int, str, None] = None,
                 bias: bool = True, input_mode: str = "auto", dense_threshold: float = 1.0) -> None:
        super().__init__()
        C.check_choice("input_mode", input_mode, _INPUT_MODES)
        spec = as_spec(spec)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.format = spec.format if spec is not None else "fp32"
        self.group_size = int(spec.group_size or 0) if spec is not None else 0
        self.layout = "dense"
        self.input_mode, self.dense_threshold = input_mode, float(dense_threshold)
        C.check_positive_int("in_features", self.in_features, 0)
        C.check_positive_int("out_features", self.out_features, 0)
        C.check_alloc("in_features*out_features", self.in_features * self.out_features, 4, "the weight")
        self._empty_buffers()
        # Placeholder weights (all-zero codes) so a freshly built module runs; from_float or
        # load_state_dict replaces them.
        w = torch.zeros(self.out_features, self.in_features)
        self._set_dense(w, torch.zeros(self.out_features) if bias else None, spec, None)

    def _config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "format": self.format, "group_size": self.group_size, "layout": self.layout,
                "input_mode": self.input_mode, "dense_threshold": self.dense_threshold}

    @property
    def bits(self) -> int:
        return _bits(self.format)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_float(cls, layer: nn.Module, spec: Union[QuantSpec, int, str, None] = None, *,
                   scale: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                   input_mode: str = "auto", dense_threshold: float = 1.0,
                   layout: str = "auto") -> "PackedSpikingLinear":
        """Packs ``layer.weight`` ``[N, K]`` (+ ``layer.bias``).

        ``spec`` None keeps fp32 values (pruning only). ``scale`` is passed to
        :func:`sparsesnn.quant.quantize`. ``mask`` (bool ``[N, K]``) selects the compressed-row
        layout with only the surviving synapses; without it, a weight with at least
        ``PRUNED_LAYOUT_MIN_SPARSITY`` exact zeros uses that layout with ``mask = weight != 0``.
        ``layout`` ``"dense"`` / ``"pruned"`` forces one layout (``"dense"`` with a mask stores
        the pruned weights as zero codes; binary codes cannot, ValueError).
        """
        C.check_choice("layout", layout, ("auto", "dense", "pruned"))
        spec = as_spec(spec)
        w, b = _float_weight(layer, "layer")
        if w.dim() != 2:
            raise ValueError(f"layer.weight: expected 2 dims [N, K], got shape {tuple(w.shape)}")
        if scale is not None and spec is None:
            raise ValueError("scale: given without a quantization spec")
        if mask is not None:
            mask = _check_mask(mask, tuple(w.shape)).to(w.device)
        elif layout == "pruned" or (layout == "auto" and w.numel()
                                    and float((w == 0).float().mean()) >= PRUNED_LAYOUT_MIN_SPARSITY):
            mask = w != 0
        if layout == "dense" and mask is not None:
            if spec is not None and spec.format == "binary" and not bool(mask.all()):
                raise ValueError("mask: binary codes cannot represent pruned (zero) weights in the dense layout")
            w, mask = w * mask, None
        N, K = w.shape
        m = cls(K, N, spec, bias=b is not None, input_mode=input_mode, dense_threshold=dense_threshold)
        if mask is None:
            m._set_dense(w, b, spec, scale)
        else:
            m._set_pruned(w, b, spec, scale, mask)
        return m

    def _quantize(self, w: Tensor, spec: Optional[QuantSpec], scale: Optional[Tensor]):
        N = w.shape[0]
        if spec is None:
            return None, torch.zeros(N, 0)
        codes, s = quantize(w, spec, scale)
        return codes, s.reshape(N, -1).float().contiguous()

    def _set_dense(self, w: Tensor, b: Optional[Tensor], spec: Optional[QuantSpec], scale: Optional[Tensor]) -> None:
        codes, s = self._quantize(w, spec, scale)
        self.layout = "dense"
        self.weights = w.t().contiguous() if spec is None else pack(codes, spec.storage_bits)
        self.scale, self.bias = s, b
        self.row_ptr = self.index = self.values = None

    def _set_pruned(self, w: Tensor, b: Optional[Tensor], spec: Optional[QuantSpec],
                    scale: Optional[Tensor], mask: Tensor) -> None:
        N, K = w.shape
        wm = w * mask
        codes, s = self._quantize(wm, spec, scale)
        mt = mask.t()  # [K, N]: entries grouped by input neuron, outputs ascending
        kk, nn_ = mt.nonzero(as_tuple=True)
        counts = torch.bincount(kk, minlength=K) if kk.numel() else torch.zeros(K, dtype=torch.int64)
        row_ptr = torch.zeros(K + 1, dtype=torch.int64)
        row_ptr[1:] = torch.cumsum(counts, 0)
        if int(row_ptr[-1]) >= 2**31:
            raise ValueError("mask: more than 2^31 - 1 surviving weights are not supported")
        self.layout = "pruned"
        self.row_ptr = row_ptr.to(torch.int32)
        self.index = nn_.to(torch.int32).to(torch.uint16) if N <= 65536 else nn_.to(torch.int32)
        if spec is None:
            self.values = wm.t()[kk, nn_].float().contiguous()
        else:
            self.values = pack_stream(codes.t()[kk, nn_].contiguous(), spec.storage_bits)
        self.scale, self.bias = s, b
        self.weights = None

    # ---- inspection -----------------------------------------------------------------------
    def dequantized_weight(self) -> Tensor:
        """The fp32 ``[N, K]`` weight this layer computes with (``codes * scale * mask``)."""
        if self.layout == "pruned":
            return _pruned_dequant(self.row_ptr, self.index, self.values, self.scale, self.bits,
                                   self.out_features, self.group_size)
        return _lin_dequant(self.weights, self.scale, self.bits, self.out_features, self.in_features,
                            self.group_size).contiguous()

    def nnz(self) -> int:
        return int(self.index.numel()) if self.layout == "pruned" else self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}, "
                f"group_size={self.group_size}, layout={self.layout}, bias={self.bias is not None}, "
                f"model_bytes={self.model_bytes()}")

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, s: Tensor) -> Tensor:
        C.check_tensor("input", s)
        C.check_min_dim("input", s, 1, "([..., K])")
        K, N = self.in_features, self.out_features
        if s.shape[-1] != K:
            raise ValueError(f"input: expected last dim {K} (in_features), got shape {tuple(s.shape)}")
        buf = self._buffers  # one dict instead of nn.Module.__getattr__ per buffer (small calls)
        pruned = self.layout == "pruned"
        ref = buf["values"] if pruned else buf["weights"]
        C.check_same_device("input", s, "weights", ref)
        if s.dtype not in _INPUT_DTYPES:
            raise ValueError(f"input: expected a float, bool or uint8 tensor, got dtype {s.dtype}")
        x = (s if s.dim() == 2 else s.reshape(-1, K))
        x = (x if x.dtype == torch.float32 else x.float()).contiguous()
        spike = self._spike_mode(s if s.dtype == torch.bool else x)
        # Inference fast path: input validated above (binary when spike), straight to the kernel.
        fast = eager_cpu(x, ref)
        if pruned:
            op = pruned_linear_cpu if fast else pruned_linear_op
            y = op(x, buf["row_ptr"], buf["index"], ref, buf["scale"], buf["bias"], self.bits, N,
                   self.group_size, spike)
        else:
            op = packed_linear_cpu if fast else packed_linear_op
            y = op(x, ref, buf["scale"], buf["bias"], self.bits, N, self.group_size, spike)
        return y if s.dim() == 2 else y.reshape(*s.shape[:-1], N)


def _pair(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, str):
        raise ValueError(f"{name}: string padding modes are not supported, got {v!r}")
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2:
        raise ValueError(f"{name}: expected an int or a pair, got {v!r}")
    return int(t[0]), int(t[1])


class PackedSpikingConv2d(_PackedBase):
    """conv2d over packed low-bit weights with event-driven scatter (inference).

    Weight rows are the ``(c, ky, kx)`` input taps, each holding the O output-channel codes
    (``pack`` of the weight reshaped to ``[O, C*KH*KW]``). Input ``[N, C, H, W]`` or
    ``[T, B, C, H, W]``. A mask zeroes pruned weights (binary codes cannot represent zeros,
    so binary + mask is rejected).

    Layouts, chosen by actual bytes: ``dense`` (``weights``: every tap row) or ``pruned``
    (``index`` + ``values``: only the tap rows with a nonzero weight, see
    :mod:`sparsesnn.ops.pruned_conv2d`), which is smaller -- and as much faster -- when whole
    tap rows are zero (tap-structured pruning, e.g. :func:`sparsesnn.ops.pruned_conv2d.tap_mask`).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, kernel_size: Any = 1,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 spec: Union[QuantSpec, int, str, None] = None, bias: bool = True,
                 input_mode: str = "auto", dense_threshold: float = 1.0) -> None:
        super().__init__()
        C.check_choice("input_mode", input_mode, _INPUT_MODES)
        spec = as_spec(spec)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError("kernel_size/stride/dilation: expected >= 1 and padding >= 0")
        self.format = spec.format if spec is not None else "fp32"
        self.group_size = int(spec.group_size or 0) if spec is not None else 0
        self.layout = "dense"
        self.input_mode, self.dense_threshold = input_mode, float(dense_threshold)
        C.check_positive_int("in_channels", self.in_channels, 0)
        C.check_positive_int("out_channels", self.out_channels, 0)
        C.check_alloc("kernel_size", self.in_channels * self.out_channels * self.kernel_size[0]
                      * self.kernel_size[1], 4, "the weight")
        self._empty_buffers()
        w = torch.zeros(self.out_channels, self.in_channels, *self.kernel_size)
        self._set(w, torch.zeros(self.out_channels) if bias else None, spec, None)

    def _config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "format": self.format, "group_size": self.group_size,
                "layout": self.layout, "input_mode": self.input_mode,
                "dense_threshold": self.dense_threshold}

    @property
    def bits(self) -> int:
        return _bits(self.format)

    @classmethod
    def from_float(cls, conv: nn.Module, spec: Union[QuantSpec, int, str, None] = None, *,
                   scale: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                   input_mode: str = "auto", dense_threshold: float = 1.0) -> "PackedSpikingConv2d":
        """Packs ``conv.weight`` ``[O, C, KH, KW]`` (+ bias); ``nn.Conv2d`` with groups=1 and
        zero padding. ``mask`` (bool, weight's shape) zeroes pruned weights."""
        spec = as_spec(spec)
        w, b = _float_weight(conv, "conv")
        if w.dim() != 4:
            raise ValueError(f"conv.weight: expected 4 dims [O, C, KH, KW], got shape {tuple(w.shape)}")
        if getattr(conv, "groups", 1) != 1:
            raise ValueError(f"conv.groups: only groups=1 is supported, got {conv.groups}")
        if getattr(conv, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"conv.padding_mode: only 'zeros' is supported, got {conv.padding_mode!r}")
        if scale is not None and spec is None:
            raise ValueError("scale: given without a quantization spec")
        if mask is not None:
            mask = _check_mask(mask, tuple(w.shape)).to(w.device)
            if spec is not None and spec.format == "binary" and not bool(mask.all()):
                raise ValueError("mask: binary codes cannot represent pruned (zero) weights")
            w = w * mask
        O, Cin, KH, KW = w.shape
        m = cls(Cin, O, (KH, KW), getattr(conv, "stride", 1), getattr(conv, "padding", 0),
                getattr(conv, "dilation", 1), spec, bias=b is not None, input_mode=input_mode,
                dense_threshold=dense_threshold)
        m._set(w, b, spec, scale, mask)
        return m

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self._plans = PlanCache()  # the configuration may differ

    def _set(self, w: Tensor, b: Optional[Tensor], spec: Optional[QuantSpec], scale: Optional[Tensor],
             mask: Optional[Tensor] = None) -> None:
        self._plans = PlanCache()  # per-input-shape call plans (sparsesnn.ops.conv2d_plan)
        O = w.shape[0]
        w2 = w.reshape(O, -1)
        if spec is None:
            rows, s, nonzero = w2.t().contiguous(), torch.zeros(O, 0), w2 != 0
        else:
            codes, s = quantize(w2, spec, scale)
            if mask is not None:
                codes = codes * mask.reshape(O, -1).to(torch.int8)
            rows, s = pack(codes, spec.storage_bits), s.reshape(O, -1).float().contiguous()
            nonzero = codes != 0
        self.scale, self.bias = s, b
        # Pruned tap-row layout when it takes fewer bytes than the dense rows (whole rows zero).
        kept = nonzero.any(0).nonzero().flatten().to(torch.int32)
        row_bytes = rows.shape[1] * rows.element_size()
        if spec is not None and spec.format == "binary" or kept.numel() * (row_bytes + 4) >= rows.numel() * rows.element_size():
            self.layout, self.weights, self.index, self.values = "dense", rows, None, None
        else:
            self.layout, self.weights = "pruned", None
            self.index, self.values = kept, rows[kept.long()].contiguous()

    def dequantized_weight(self) -> Tensor:
        """The fp32 ``[O, C, KH, KW]`` weight this layer computes with."""
        if self.layout == "pruned":
            return _pruned_conv_dequant(self.index, self.values, self.scale, self.bits, self.out_channels,
                                        self.in_channels, list(self.kernel_size), self.group_size).contiguous()
        return _conv_dequant(self.weights, self.scale, self.bits, self.out_channels, self.in_channels,
                             list(self.kernel_size), self.group_size).contiguous()

    def nnz(self) -> int:
        """Stored weights: kept tap rows x output channels."""
        rows = self.index.numel() if self.layout == "pruned" else self.weights.shape[0]
        return int(rows) * self.out_channels

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, format={self.format}, "
                f"group_size={self.group_size}, layout={self.layout}, model_bytes={self.model_bytes()}")

    def forward(self, s: Tensor) -> Tensor:
        # Eager CPU inference on fp32 contiguous input of a shape seen before: the gather
        # kernel straight from the shape's plan (sparsesnn.ops.conv2d_plan); the first call,
        # and every other case, validates and runs below.
        plans = self.__dict__.get("_plans")
        plan = plans.get(s.shape) if plans is not None and type(s) is Tensor else None
        if (plan is not None and s.dtype == torch.float32 and s.is_contiguous() and self.input_mode == "auto"
                and self.dense_threshold >= 1.0 and eager_cpu(s, plan.ref)):
            buf = self._buffers
            pruned = self.layout == "pruned"
            if plan.valid(buf["values"] if pruned else buf["weights"], buf["index"] if pruned else None):
                y = torch.empty(plan.out_shape)
                b = buf["bias"]
                args = (s.data_ptr(), buf["scale"].data_ptr(), b.data_ptr() if b is not None else 0, y.data_ptr())
                if plan.run(*args) or plan.run_analog(*args):  # not 0/1: the analog gather kernel
                    return y
                return self._forward(s, try_spike=False)
        return self._forward(s)

    def _forward(self, s: Tensor, try_spike: bool = True) -> Tensor:
        C.check_tensor("input", s)
        if s.dim() not in (4, 5):
            raise ValueError(f"input: expected [N, C, H, W] or [T, B, C, H, W], got shape {tuple(s.shape)}")
        if s.shape[-3] != self.in_channels:
            raise ValueError(f"input: expected {self.in_channels} channels (dim -3), got shape {tuple(s.shape)}")
        buf = self._buffers
        pruned = self.layout == "pruned"
        ref = buf["values"] if pruned else buf["weights"]
        C.check_same_device("input", s, "weights", ref)
        if s.dtype not in _INPUT_DTYPES:
            raise ValueError(f"input: expected a float, bool or uint8 tensor, got dtype {s.dtype}")
        lead = s.shape[:-3]
        x = s.reshape(-1, *s.shape[-3:]).to(torch.float32).contiguous()
        kh, kw = self.kernel_size
        H, W = x.shape[-2:]
        if H + 2 * self.padding[0] < self.dilation[0] * (kh - 1) + 1 or W + 2 * self.padding[1] < self.dilation[1] * (kw - 1) + 1:
            raise ValueError(f"input: spatial size {(H, W)} is smaller than the (dilated) kernel")
        oh = (H + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (W + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        C.check_alloc("padding", x.shape[0] * self.out_channels * oh * ow, 4,
                      f"the output [{x.shape[0]}, {self.out_channels}, {oh}, {ow}]")
        geom = (list(self.kernel_size), list(self.stride), list(self.padding), list(self.dilation))
        fast = eager_cpu(x, ref)
        y = None
        if fast and self.input_mode == "auto" and self.dense_threshold >= 1.0 and try_spike:
            # The spike kernel checks binarity itself while listing events (no separate pass
            # over the input) and runs the analog kernel if the input is not 0/1.
            if pruned:
                y = pruned_conv2d_unchecked(x, buf["index"], ref, buf["scale"], buf["bias"], self.bits,
                                            self.out_channels, *geom, self.group_size)
            else:
                y = packed_conv2d_unchecked(x, ref, buf["scale"], buf["bias"], self.bits, self.out_channels,
                                            *geom, self.group_size)
            if s.dtype == torch.float32 and s.is_contiguous() and y is not None:
                plan = build_plan(x, pruned=pruned, ref=ref, index=buf["index"], bits=self.bits,
                                  out_channels=self.out_channels, kernel_size=geom[0], stride=geom[1],
                                  padding=geom[2], dilation=geom[3], group_size=self.group_size,
                                  out_shape=(*lead, self.out_channels, oh, ow))
                if plan is not None:
                    if len(self._plans) >= 16:  # many input shapes: keep the cache small
                        self._plans.clear()
                    self._plans[s.shape] = plan
        if y is None:
            spike = self._spike_mode(x)
            # Inference fast path: input validated above (binary when spike), straight to the kernel.
            if pruned:
                op = pruned_conv2d_kernel if fast else pruned_conv2d_op
                y = op(x, buf["index"], ref, buf["scale"], buf["bias"], self.bits, self.out_channels, *geom,
                       self.group_size, spike)
            else:
                op = packed_conv2d_kernel if fast else packed_conv2d_op
                y = op(x, ref, buf["scale"], buf["bias"], self.bits, self.out_channels, *geom, self.group_size,
                       spike)
        return y.reshape(*lead, *y.shape[1:])
