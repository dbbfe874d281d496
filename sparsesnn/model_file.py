"""Safe model files: architecture as data, tensors as raw bytes, no pickle.

Layout (all integers little-endian)::

    b"SSNNMODL"            8-byte magic
    header_len             uint64
    header                 header_len bytes of UTF-8 JSON (see below)
    padding                to a multiple of 64 bytes
    data                   raw tensor bytes; each tensor at header-given offset (from data start)

Header: ``{"format": "sparsesnn.model", "version": 1, "data_bytes": int, "model": NODE}`` where ``NODE`` is
``{"type": NAME, "config": {...}, "tensors": {local_name: TENSOR}, "children": [{"name": ...,
"node": NODE}, ...]}`` and ``TENSOR`` is ``{"kind": "parameter"|"buffer", "dtype": "float32",
"shape": [...], "offset": int, "nbytes": int, "requires_grad": bool}``.

Loading never executes code from the file: each ``NAME`` must be in the explicit registry of
module types below (one :func:`register` call per type, saying how to read its constructor
settings and how to rebuild it); every size, offset, dtype and shape is checked against the file
and the description before anything is allocated. Anything wrong is a ``ValueError``.
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["save", "load", "dumps", "loads", "register", "registered_types", "FORMAT", "VERSION",
           "LEGACY_FORMAT"]

MAGIC = b"SSNNMODL"
FORMAT = "sparsesnn.model"
VERSION = 1
LEGACY_FORMAT = "sparsesnn.deployed/1"  # pickle-based format of sparsesnn <= 0.1 (never loaded)
_ALIGN = 64
_MAX_HEADER = 64 << 20   # bytes of JSON
_MAX_DEPTH = 64          # module nesting
_MAX_DIM = 8             # tensor rank
_MAX_CONFIG_INT = 1 << 40  # any integer setting (sizes, padding, ...)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "uint16": torch.uint16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


# ---- registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleType:
    """How one module type is written and rebuilt.

    ``config(module)`` -> JSON-safe settings; ``build(config)`` -> module (without tensors).
    ``on_meta``: build under ``torch.device("meta")`` (no allocation; the file's tensors then
    replace parameters/buffers of exactly the same names, shapes and dtypes). Otherwise
    ``adopt(module, config, tensors)`` installs the stored tensors after ``check(config,
    infos)`` validated their descriptions, before anything was built.
    """
    cls: type
    name: str
    config: Callable[[nn.Module], dict]
    build: Callable[[dict], nn.Module]
    on_meta: bool = True
    check: Optional[Callable[[dict, dict], None]] = None
    adopt: Optional[Callable[[nn.Module, dict, dict], None]] = None


_BY_CLS: dict[type, ModuleType] = {}
_BY_NAME: dict[str, ModuleType] = {}


def register(cls: type, name: str, config: Callable[[nn.Module], dict],
             build: Callable[[dict], nn.Module], *, on_meta: bool = True,
             check: Optional[Callable[[dict, dict], None]] = None,
             adopt: Optional[Callable[[nn.Module, dict, dict], None]] = None) -> None:
    """Allow module type ``cls`` in model files under ``name`` (exact type, not subclasses)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"cls: expected an nn.Module subclass, got {cls!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if name in _BY_NAME and _BY_NAME[name].cls is not cls:
        raise ValueError(f"name: {name!r} is already registered for {_BY_NAME[name].cls.__name__}")
    entry = ModuleType(cls, name, config, build, on_meta, check, adopt)
    _BY_CLS[cls], _BY_NAME[name] = entry, entry


def registered_types() -> list[str]:
    """Names of the module types a model file may contain."""
    return sorted(_BY_NAME)


# ---- writing -------------------------------------------------------------------------------
def _json_safe(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise ValueError(f"config: value {v!r} of type {type(v).__name__} cannot be stored")


def _own_tensors(m: nn.Module) -> dict[str, tuple[str, Tensor]]:
    out = {n: ("parameter", p) for n, p in m._parameters.items() if p is not None}
    for n, b in m._buffers.items():
        if b is not None and n not in m._non_persistent_buffers_set:
            out[n] = ("buffer", b)
    return out


def _describe(m: nn.Module, where: str, blobs: list[bytes], pos: list[int]) -> dict:
    entry = _BY_CLS.get(type(m))
    if entry is None:
        raise ValueError(f"model{where}: module type {type(m).__module__}.{type(m).__qualname__} "
                         "cannot be stored in a model file (not registered; see "
                         "sparsesnn.model_file.register)")
    tensors = {}
    for name, (kind, t) in _own_tensors(m).items():
        if t.dtype not in _DTYPE_NAMES:
            raise ValueError(f"model{where}.{name}: dtype {t.dtype} cannot be stored")
        data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        tensors[name] = {"kind": kind, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                         "offset": pos[0], "nbytes": len(data),
                         "requires_grad": bool(kind == "parameter" and t.requires_grad)}
        pad = -len(data) % _ALIGN
        blobs.append(data + b"\0" * pad)
        pos[0] += len(data) + pad
    children = [{"name": n, "node": _describe(c, f"{where}.{n}", blobs, pos)}
                for n, c in m._modules.items() if c is not None]
    return {"type": entry.name, "config": _json_safe(entry.config(m)), "tensors": tensors,
            "children": children}


def dumps(model: nn.Module) -> bytes:
    """The model file of ``model`` as bytes (see the module docstring for the layout)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    if sys.byteorder != "little":
        raise ValueError("model files are little-endian; big-endian hosts are not supported")
    blobs: list[bytes] = []
    node = _describe(model, "", blobs, [0])
    header = json.dumps({"format": FORMAT, "version": VERSION, "data_bytes": sum(map(len, blobs)),
                         "model": node},
                        allow_nan=False, separators=(",", ":")).encode()
    head = MAGIC + struct.pack("<Q", len(header)) + header
    return head + b"\0" * (-len(head) % _ALIGN) + b"".join(blobs)


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (a crash mid-write leaves any old file intact)."""
    data = dumps(model)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".ssnn-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- reading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    kind: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    requires_grad: bool


def _reject_constant(name: str) -> None:
    raise ValueError(f"header: non-finite number {name} is not allowed")


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor_info(where: str, d: Any, data_len: int) -> TensorInfo:
    _expect(isinstance(d, dict), f"{where}: expected a tensor description object, got {type(d).__name__}")
    kind, dtype, shape = d.get("kind"), d.get("dtype"), d.get("shape")
    offset, nbytes, rg = d.get("offset"), d.get("nbytes"), d.get("requires_grad", False)
    _expect(kind in ("parameter", "buffer"), f"{where}.kind: expected 'parameter' or 'buffer', got {kind!r}")
    _expect(isinstance(dtype, str) and dtype in _DTYPES,
            f"{where}.dtype: expected one of {sorted(_DTYPES)}, got {dtype!r}")
    _expect(isinstance(shape, list) and len(shape) <= _MAX_DIM
            and all(_is_int(s) and 0 <= s < 2**62 for s in shape),
            f"{where}.shape: expected a list of at most {_MAX_DIM} non-negative integers, got {shape!r}")
    _expect(_is_int(offset) and _is_int(nbytes) and offset >= 0 and nbytes >= 0,
            f"{where}: offset/nbytes must be non-negative integers, got {offset!r}/{nbytes!r}")
    _expect(isinstance(rg, bool), f"{where}.requires_grad: expected a bool, got {rg!r}")
    dt = _DTYPES[dtype]
    numel = math.prod(shape)
    _expect(numel * dt.itemsize == nbytes,
            f"{where}: shape {shape} of {dtype} needs {numel * dt.itemsize} bytes, header says {nbytes}")
    _expect(offset + nbytes <= data_len,
            f"{where}: bytes [{offset}, {offset + nbytes}) lie outside the data section "
            f"({data_len} bytes; file truncated?)")
    return TensorInfo(kind, dt, tuple(shape), offset, nbytes, rg)


def _read_tensor(where: str, info: TensorInfo, data: memoryview) -> Tensor:
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    raw = bytearray(data[info.offset:info.offset + info.nbytes])
    if info.dtype == torch.bool:
        u = torch.frombuffer(raw, dtype=torch.uint8)
        _expect(bool((u <= 1).all()), f"{where}: bool tensor holds bytes other than 0/1")
        return u.view(torch.bool).reshape(info.shape)
    return torch.frombuffer(raw, dtype=info.dtype).reshape(info.shape)


def _check_name(where: str, name: Any) -> str:
    _expect(isinstance(name, str) and name.isidentifier() or (isinstance(name, str) and name.isdigit()),
            f"{where}: expected an identifier or a number as module/tensor name, got {name!r}")
    return name


def _build_node(node: Any, where: str, data: memoryview, depth: int) -> nn.Module:
    _expect(depth <= _MAX_DEPTH, f"model: modules nested deeper than {_MAX_DEPTH} levels")
    _expect(isinstance(node, dict), f"{where}: expected a module description object, got {type(node).__name__}")
    name, config = node.get("type"), node.get("config", {})
    tensors, children = node.get("tensors", {}), node.get("children", [])
    _expect(isinstance(name, str) and name in _BY_NAME,
            f"{where}.type: unknown module type {name!r}; a model file may contain {registered_types()}")
    _expect(isinstance(config, dict), f"{where}.config: expected an object, got {type(config).__name__}")
    _expect(isinstance(tensors, dict), f"{where}.tensors: expected an object, got {type(tensors).__name__}")
    _expect(isinstance(children, list), f"{where}.children: expected a list, got {type(children).__name__}")
    _check_config_values(f"{where}.config", config)
    entry = _BY_NAME[name]
    infos = {_check_name(f"{where}.tensors", k): _tensor_info(f"{where}.tensors.{k}", v, len(data))
             for k, v in tensors.items()}
    if entry.check is not None:
        _in(where, entry.check, config, infos)
    try:
        if entry.on_meta:
            with torch.device("meta"):
                module = entry.build(config)
        else:
            module = entry.build(config)
    except ValueError as exc:
        raise ValueError(f"{where}: invalid {name} settings: {exc}") from exc
    except Exception as exc:  # a bad setting the constructor rejects with another error type
        raise ValueError(f"{where}: invalid {name} settings {config!r}: {type(exc).__name__}: {exc}") from exc
    _expect(type(module) is entry.cls, f"{where}: builder of {name} returned {type(module).__name__}")
    for child in children:
        _expect(isinstance(child, dict), f"{where}.children: expected objects, got {type(child).__name__}")
        cname = _check_name(f"{where}.children", child.get("name"))
        _expect(not hasattr(module, cname) or cname in module._modules,
                f"{where}.children: name {cname!r} clashes with an attribute of {name}")
        module.add_module(cname, _build_node(child.get("node"), f"{where}.{cname}", data, depth + 1))
    loaded = {k: _read_tensor(f"{where}.{k}", info, data) for k, info in infos.items()}
    if entry.adopt is not None:
        _in(where, entry.adopt, module, config, loaded)
    else:
        _replace_tensors(module, where, infos, loaded)
    for k, info in infos.items():
        p = module._parameters.get(k)
        if p is not None:
            p.requires_grad_(info.requires_grad and p.is_floating_point())
    return module


def _in(where: str, fn: Callable, *args: Any) -> None:
    """``fn(*args)`` with its ValueError prefixed by the module's place in the model."""
    try:
        fn(*args)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_config_values(where: str, v: Any, depth: int = 0) -> None:
    """Settings are small JSON values: bounded nesting and integers (no 10**100 sizes)."""
    _expect(depth <= 8, f"{where}: nested too deeply")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_config_values(f"{where}.{k}", x, depth + 1)
    elif isinstance(v, list):
        _expect(len(v) <= 4096, f"{where}: list of {len(v)} items is too long")
        for x in v:
            _check_config_values(where, x, depth + 1)
    elif _is_int(v):
        _expect(abs(v) <= _MAX_CONFIG_INT, f"{where}: integer {v} is out of range (|v| <= 2**40)")


def _replace_tensors(module: nn.Module, where: str, infos: dict, loaded: dict) -> None:
    """The meta-built module's parameters/buffers, replaced one by one by equal-shaped ones."""
    expected = _own_tensors(module)
    missing, extra = sorted(set(expected) - set(infos)), sorted(set(infos) - set(expected))
    _expect(not missing and not extra,
            f"{where}: stored tensors do not match the description (missing {missing}, unexpected {extra})")
    for k, (kind, ref) in expected.items():
        info = infos[k]
        _expect(info.kind == kind, f"{where}.{k}: stored as a {info.kind}, the module has a {kind}")
        _expect(info.shape == tuple(ref.shape) and info.dtype == ref.dtype,
                f"{where}.{k}: shape mismatch: the description gives {tuple(ref.shape)} {ref.dtype}, "
                f"the file holds {info.shape} {info.dtype}")
        if kind == "parameter":
            module._parameters[k] = nn.Parameter(loaded[k], requires_grad=False)
        else:
            module._buffers[k] = loaded[k]
    for k, b in list(module._buffers.items()):  # non-persistent buffers: recomputed on CPU
        if b is not None and b.is_meta:
            raise ValueError(f"{where}.{k}: buffer is not stored and cannot be rebuilt")


def loads(data: bytes | bytearray | memoryview, map_location: Any = "cpu") -> nn.Module:
    """The model stored in ``data`` (bytes of a model file), in eval mode."""
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if len(mv) >= 2 and (bytes(mv[:4]) == b"PK\x03\x04" or mv[0] == 0x80):
        raise ValueError(
            "file: this is a pickle-based file (the old 'sparsesnn.deployed/1' format or a "
            "torch.save file); it is not loaded because unpickling runs code stored in the file. "
            "If you trust its source, convert it once with "
            "sparsesnn.deploy.convert_legacy(path, out_path, trust=True)")
    _expect(len(mv) >= 16 and bytes(mv[:8]) == MAGIC,
            f"file: not a sparsesnn model file (expected magic {MAGIC!r}, got {bytes(mv[:8])!r})")
    (hlen,) = struct.unpack("<Q", mv[8:16])
    _expect(hlen <= _MAX_HEADER and 16 + hlen <= len(mv),
            f"file: header length {hlen} exceeds the file ({len(mv)} bytes; truncated?)")
    try:
        header = json.loads(bytes(mv[16:16 + hlen]).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"file: corrupted header ({type(exc).__name__}: {exc})") from None
    _expect(isinstance(header, dict) and header.get("format") == FORMAT,
            f"file: header does not describe a {FORMAT!r} file")
    version = header.get("version")
    _expect(_is_int(version) and version == VERSION,
            f"file: unsupported model file version {version!r} (this sparsesnn reads version {VERSION})")
    start = 16 + hlen + (-(16 + hlen) % _ALIGN)
    size = header.get("data_bytes")
    _expect(_is_int(size) and size >= 0, f"file: data_bytes must be a non-negative integer, got {size!r}")
    _expect(start + size == len(mv),
            f"file: expected {start + size} bytes (header + data), got {len(mv)} (truncated or extended?)")
    model = _build_node(header.get("model"), "model", mv[start:], 0)
    model.eval()
    return model if map_location in (None, "cpu") else model.to(map_location)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """Load a model written by :func:`save` (safe on files from anywhere: no code runs)."""
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    return loads(data, map_location)


# ---- registered types ----------------------------------------------------------------------
def _attrs(*names: str, **derived: Callable[[nn.Module], Any]) -> Callable[[nn.Module], dict]:
    """config(): the named attributes, plus derived settings (e.g. ``bias=has bias``)."""
    def config(m: nn.Module) -> dict:
        out = {n: getattr(m, n) for n in names}
        out.update({k: f(m) for k, f in derived.items()})
        return out
    return config


def _kwargs(cls: type) -> Callable[[dict], nn.Module]:
    return lambda c: cls(**c)


_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
         "padding_mode")


def _has_bias(m: nn.Module) -> bool:
    return m.bias is not None


def _register_torch() -> None:
    simple = [nn.Identity, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU]
    for cls in simple:
        register(cls, f"torch.nn.{cls.__name__}", lambda m: {}, _kwargs(cls))
    register(nn.Sequential, "torch.nn.Sequential", lambda m: {}, lambda c: nn.Sequential(**c))
    register(nn.ModuleList, "torch.nn.ModuleList", lambda m: {}, lambda c: nn.ModuleList(**c))
    register(nn.ModuleDict, "torch.nn.ModuleDict", lambda m: {}, lambda c: nn.ModuleDict(**c))
    register(nn.Flatten, "torch.nn.Flatten", _attrs("start_dim", "end_dim"), _kwargs(nn.Flatten))
    register(nn.Dropout, "torch.nn.Dropout", _attrs("p"), _kwargs(nn.Dropout))
    register(nn.LeakyReLU, "torch.nn.LeakyReLU", _attrs("negative_slope"), _kwargs(nn.LeakyReLU))
    register(nn.Softmax, "torch.nn.Softmax", _attrs("dim"), _kwargs(nn.Softmax))
    for cls in (nn.MaxPool1d, nn.MaxPool2d):
        register(cls, f"torch.nn.{cls.__name__}",
                 _attrs("kernel_size", "stride", "padding", "dilation", "ceil_mode"), _kwargs(cls))
    for cls in (nn.AvgPool1d, nn.AvgPool2d):
        register(cls, f"torch.nn.{cls.__name__}",
                 _attrs("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"), _kwargs(cls))
    register(nn.AdaptiveAvgPool2d, "torch.nn.AdaptiveAvgPool2d", _attrs("output_size"),
             _kwargs(nn.AdaptiveAvgPool2d))
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d):
        register(cls, f"torch.nn.{cls.__name__}",
                 _attrs("num_features", "eps", "momentum", "affine", "track_running_stats"), _kwargs(cls))
    register(nn.LayerNorm, "torch.nn.LayerNorm", _attrs("normalized_shape", "eps", "elementwise_affine",
                                                       bias=lambda m: m.bias is not None),
             _kwargs(nn.LayerNorm))
    register(nn.Linear, "torch.nn.Linear", _attrs("in_features", "out_features", bias=_has_bias),
             _kwargs(nn.Linear))
    for cls in (nn.Conv1d, nn.Conv2d):
        register(cls, f"torch.nn.{cls.__name__}", _attrs(*_CONV, bias=_has_bias), _kwargs(cls))


def _register_sparsesnn() -> None:
    from . import nn as snn
    from .fixed_point import FixedPoint
    from .models import SEWResNet, SpikingLeNet, SpikingMLP, SpikingVGG
    from .nn import packed as P

    def neuron(*names: str) -> Callable[[nn.Module], dict]:
        base = _attrs(*names, "v_threshold", "v_reset", "detach_reset", "surrogate", "alpha", "step_mode")

        def config(m: nn.Module) -> dict:
            sq = m.state_quant
            return {**base(m), "state_quant": None if sq is None else
                    {"bits": sq.bits, "frac_bits": sq.frac_bits, "rounding": sq.rounding, "seed": sq.seed}}
        return config

    def neuron_build(cls: type) -> Callable[[dict], nn.Module]:
        def build(c: dict) -> nn.Module:
            c = dict(c)
            sq = c.pop("state_quant", None)
            m = cls(**c)
            # parameters are stored already on the grid: set the format, do not re-round
            m.state_quant = None if sq is None else FixedPoint(**sq)
            return m
        return build

    register(snn.LIF, "sparsesnn.LIF", neuron("tau", "decay_input"), neuron_build(snn.LIF))
    register(snn.IF, "sparsesnn.IF", neuron(), neuron_build(snn.IF))
    register(snn.PLIF, "sparsesnn.PLIF", neuron("decay_input"), neuron_build(snn.PLIF))
    dispatch = ("break_even", "mode", "min_macs")
    register(snn.SpikingLinear, "sparsesnn.SpikingLinear",
             _attrs("in_features", "out_features", *dispatch, bias=_has_bias), _kwargs(snn.SpikingLinear))
    register(snn.SpikingConv2d, "sparsesnn.SpikingConv2d",
             _attrs(*_CONV, *dispatch, bias=_has_bias), _kwargs(snn.SpikingConv2d))
    register(P.PackedSpikingLinear, "sparsesnn.PackedSpikingLinear", _packed_config,
             _packed_build(P.PackedSpikingLinear), on_meta=False, check=_check_packed_linear,
             adopt=_adopt_packed_linear)
    register(P.PackedSpikingConv2d, "sparsesnn.PackedSpikingConv2d", _packed_config,
             _packed_build(P.PackedSpikingConv2d), on_meta=False, check=_check_packed_conv,
             adopt=_adopt_packed_conv)
    # multi-step building blocks: torch's settings, sparsesnn's forward
    for cls in (snn.BatchNorm1d, snn.BatchNorm2d):
        register(cls, f"sparsesnn.{cls.__name__}",
                 _attrs("num_features", "eps", "momentum", "affine", "track_running_stats"), _kwargs(cls))
    register(snn.MaxPool2d, "sparsesnn.MaxPool2d",
             _attrs("kernel_size", "stride", "padding", "dilation", "ceil_mode"), _kwargs(snn.MaxPool2d))
    register(snn.AvgPool2d, "sparsesnn.AvgPool2d",
             _attrs("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"), _kwargs(snn.AvgPool2d))
    register(snn.AdaptiveAvgPool2d, "sparsesnn.AdaptiveAvgPool2d", _attrs("output_size"),
             _kwargs(snn.AdaptiveAvgPool2d))
    register(snn.Flatten, "sparsesnn.Flatten", _attrs("step_mode"), _kwargs(snn.Flatten))
    register(snn.Dropout, "sparsesnn.Dropout", _attrs("p", "step_mode"), _kwargs(snn.Dropout))
    neuron_args = ("neuron", "tau", "v_threshold", "detach_reset", "surrogate")
    register(snn.SEWBlock, "sparsesnn.SEWBlock",
             _attrs("in_channels", "out_channels", "stride", "connect", *neuron_args), _kwargs(snn.SEWBlock))
    # conv models: rebuilt from their constructor settings, then their children come from the file
    model_args = ("in_channels", "num_classes", "T", "encoder", *neuron_args)
    register(SpikingVGG, "sparsesnn.SpikingVGG",
             _attrs("cfg", "image_size", "hidden", "dropout", *model_args), _kwargs(SpikingVGG))
    register(SpikingLeNet, "sparsesnn.SpikingLeNet",
             _attrs("image_size", "channels", "kernel_size", "hidden", "pool", *model_args),
             _kwargs(SpikingLeNet))
    register(SEWResNet, "sparsesnn.SEWResNet", _attrs("layers", "channels", "connect", *model_args),
             _kwargs(SEWResNet))

    def mlp_build(c: dict) -> nn.Module:
        T, order = c.get("T"), c.get("order")
        _expect(_is_int(T) and 1 <= T <= 1 << 16, f"T: expected an integer in [1, 65536], got {T!r}")
        _expect(isinstance(order, list) and all(isinstance(o, str) for o in order),
                f"order: expected a list of child names, got {order!r}")
        m = SpikingMLP(1, (), 1, T)  # computes the encoder thresholds for T
        m._modules.clear()
        m._order = list(order)
        return m
    register(SpikingMLP, "sparsesnn.SpikingMLP", lambda m: {"T": m.T, "order": list(m._order)},
             mlp_build, on_meta=False, adopt=_adopt_mlp)


def _adopt_mlp(m: nn.Module, config: dict, loaded: dict) -> None:
    _expect(not loaded, f"model: SpikingMLP stores no tensors of its own, got {sorted(loaded)}")
    _expect(set(m._order) <= set(m._modules),
            f"model.config.order: names {sorted(set(m._order) - set(m._modules))} are not children")


# ---- packed layers: buffers validated arithmetically before anything is allocated ------------
_PACKED_SETTINGS = ("format", "group_size", "layout", "input_mode", "dense_threshold")
_CONV_SIZES = {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"}


def _packed_config(m: nn.Module) -> dict:
    return {**m._config(), "bias": m.bias is not None}


def _packed_build(cls: type) -> Callable[[dict], nn.Module]:
    from .quant import QuantSpec

    def build(c: dict) -> nn.Module:
        fmt, gs = c["format"], c["group_size"]
        spec = None if fmt == "fp32" else QuantSpec(fmt, group_size=gs or None)
        # A 1x1 module validates the settings through the constructor; the sizes (checked
        # against the stored buffers already) and the buffers themselves are set by adopt.
        m = cls(1, 1, spec=spec, bias=False, input_mode=c["input_mode"],
                dense_threshold=c["dense_threshold"])
        for k, v in c.items():
            if k != "bias":
                setattr(m, k, tuple(v) if isinstance(v, list) else v)
        return m
    return build


def _adopt_packed(m: nn.Module, config: dict, loaded: dict) -> None:
    from .nn.packed import _BUFFERS
    for name in _BUFFERS:
        m._buffers[name] = loaded.get(name)


def _size(c: dict, key: str, minimum: int = 1) -> int:
    v = c.get(key)
    _expect(_is_int(v) and minimum <= v < 2**31, f"{key}: expected an integer in [{minimum}, 2**31), got {v!r}")
    return v


def _pair_setting(c: dict, key: str, minimum: int) -> tuple[int, int]:
    v = c.get(key)
    _expect(isinstance(v, list) and len(v) == 2 and all(_is_int(x) and minimum <= x < 2**20 for x in v),
            f"{key}: expected a pair of integers in [{minimum}, 2**20), got {v!r}")
    return v[0], v[1]


def _packed_common(c: dict, K: int, N: int, infos: dict) -> tuple[int, bool]:
    from .quant.quantizers import num_groups
    from .quant.spec import FORMATS, QuantSpec
    keys = set(c) - {"bias"}
    fmt, gs = c.get("format"), c.get("group_size")
    _expect(fmt == "fp32" or fmt in FORMATS, f"format: expected 'fp32' or one of {FORMATS}, got {fmt!r}")
    _expect(_is_int(gs) and 0 <= gs < 2**31, f"group_size: expected an integer >= 0, got {gs!r}")
    _expect(isinstance(c.get("bias"), bool), f"bias: expected a bool, got {c.get('bias')!r}")
    _expect(set(_PACKED_SETTINGS) <= keys, f"config: missing settings {sorted(set(_PACKED_SETTINGS) - keys)}")
    sizes = {"in_features", "out_features"} if "in_features" in keys else _CONV_SIZES
    extra = keys - set(_PACKED_SETTINGS) - sizes
    _expect(not extra, f"config: unknown settings {sorted(extra)}")
    bits = 32 if fmt == "fp32" else QuantSpec(fmt).storage_bits
    G = 0 if fmt == "fp32" else num_groups(K, gs or None)
    want = {"scale": ((N, G), torch.float32)}
    if c["bias"]:
        want["bias"] = ((N,), torch.float32)
    _expect_infos(want, {k: infos[k] for k in want if k in infos})
    return bits, fmt == "fp32"


def _expect_infos(want: dict, infos: dict) -> None:
    for k, (shape, dtype) in want.items():
        info = infos.get(k)
        _expect(info is not None, f"{k}: buffer missing from the file")
        _expect(info.kind == "buffer" and info.shape == tuple(shape) and info.dtype == dtype,
                f"{k}: shape mismatch: the description needs {tuple(shape)} {dtype}, "
                f"the file holds {info.shape} {info.dtype}")


def _check_packed_linear(c: dict, infos: dict) -> None:
    K, N = _size(c, "in_features"), _size(c, "out_features")
    bits, fp32 = _packed_common(c, K, N, infos)
    layout = c.get("layout")
    _expect(layout in ("dense", "pruned"), f"layout: expected 'dense' or 'pruned', got {layout!r}")
    allowed = {"scale", "bias"} if c["bias"] else {"scale"}
    if layout == "dense":
        want = {"weights": ((K, N) if fp32 else (K, -(-N * bits // 8)), torch.float32 if fp32 else torch.uint8)}
    else:
        idx = infos.get("index")
        _expect(idx is not None and len(idx.shape) == 1, "index: expected a 1-D buffer in the file")
        nnz = idx.shape[0]
        want = {"row_ptr": ((K + 1,), torch.int32),
                "index": ((nnz,), torch.uint16 if N <= 65536 else torch.int32),
                "values": ((nnz,) if fp32 else (-(-nnz * bits // 8),), torch.float32 if fp32 else torch.uint8)}
    _expect_infos(want, infos)
    extra = set(infos) - allowed - set(want)
    _expect(not extra, f"tensors: unexpected buffers {sorted(extra)} for layout {layout!r}")


def _check_packed_conv(c: dict, infos: dict) -> None:
    Cin, O = _size(c, "in_channels"), _size(c, "out_channels")
    kh, kw = _pair_setting(c, "kernel_size", 1)
    _pair_setting(c, "stride", 1)
    _pair_setting(c, "padding", 0)
    _pair_setting(c, "dilation", 1)
    layout = c.get("layout")
    _expect(layout in ("dense", "pruned"), f"layout: expected 'dense' or 'pruned', got {layout!r}")
    K = Cin * kh * kw
    _expect(K < 2**31, f"in_channels*kernel_size: {K} taps is too many")
    bits, fp32 = _packed_common(c, K, O, infos)
    row = ((O,) if fp32 else (-(-O * bits // 8),), torch.float32 if fp32 else torch.uint8)
    if layout == "dense":
        want, names = {"weights": ((K,) + row[0], row[1])}, {"weights"}
    else:  # kept tap rows: index [R] int32 (checked in range when adopted), values [R, row]
        info = infos.get("index")
        _expect(info is not None and len(info.shape) == 1 and 0 <= info.shape[0] <= K,
                f"index: expected a 1-d tensor of at most {K} tap rows")
        R = info.shape[0]
        want, names = {"index": ((R,), torch.int32), "values": ((R,) + row[0], row[1])}, {"index", "values"}
    _expect_infos(want, infos)
    extra = set(infos) - {"scale", "bias"} - names
    _expect(not extra, f"tensors: unexpected buffers {sorted(extra)}")


def _adopt_packed_conv(m: nn.Module, config: dict, loaded: dict) -> None:
    _adopt_packed(m, config, loaded)
    if m.layout == "pruned":
        idx = m.index.long()
        taps = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        _expect(idx.numel() == 0 or (int(idx.min()) >= 0 and int(idx.max()) < taps
                                     and bool((idx[1:] > idx[:-1]).all())),
                f"index: tap rows must be increasing and lie in [0, {taps})")


def _check_row_ptr(m: nn.Module) -> None:
    """Pruned layout contents, checked before any kernel sees them: row_ptr from 0 to nnz,
    non-decreasing; within each input row the output indices strictly ascending (what
    ``from_float`` writes; a repeated index would add one weight twice) and < out_features."""
    rp, idx = m.row_ptr.long(), m.index.long()
    _expect(int(rp[0]) == 0 and int(rp[-1]) == idx.numel() and bool((rp[1:] >= rp[:-1]).all()),
            "row_ptr: expected non-decreasing offsets from 0 to the number of stored weights")
    _expect(idx.numel() == 0 or (int(idx.min()) >= 0 and int(idx.max()) < m.out_features),
            f"index: output indices must lie in [0, {m.out_features})")
    starts = torch.zeros(idx.numel() + 1, dtype=torch.bool)
    starts[rp[:-1]] = True  # first entry of each row (an empty row marks its successor's start)
    bad = ((idx[1:] <= idx[:-1]) & ~starts[1:-1]).nonzero()
    _expect(bad.numel() == 0, "index: output indices must be strictly ascending within each input "
            f"row (entry {int(bad[0]) + 1 if bad.numel() else 0} is not)")


def _adopt_packed_linear(m: nn.Module, config: dict, loaded: dict) -> None:
    _adopt_packed(m, config, loaded)
    if m.layout == "pruned":
        _check_row_ptr(m)


_register_torch()
_register_sparsesnn()
