"""Packed int4/int8 and pruned event-driven conv vs the fp32 event conv and torch conv2d, as called.

Layer: 128 -> 128 channels, 3x3, stride 1, padding 1, on 32x32 binary spikes at 5% density,
batch 1, 4 and 16, T = 1 and T = 4 (``[T, B, C, H, W]``, one call). Each variant runs in its
own fresh process through the public API with default settings:

  * ``torch conv2d``: ``torch.nn.functional.conv2d`` on the fp32 spikes (dense, oneDNN/MKL);
  * ``fp32 event``: ``sparsesnn.nn.SpikingConv2d`` (dense-weight event-driven conv; its
    density dispatch decides, the path it took is recorded), and ``F.spike_conv2d`` called
    directly;
  * ``int8`` / ``int4``: ``PackedSpikingConv2d.from_float(conv, spec)``;
  * ``int4 pruned 90% (taps)``: ``from_float`` with ``tap_mask(weight, 0.9)`` (90% of the tap rows
    ``(c, ky, kx)`` zero, so 90% of the weights): the pruned tap-row layout;
  * ``int4 pruned 90% (unstructured)``: ``from_float`` with a 90% magnitude mask: almost no
    tap row is entirely zero, so the layer keeps the dense packed layout (shown for honesty).

Every call gets a different spike pattern (a pool of inputs is cycled).

    python bench/bench_packed_conv.py [--quick | --smoke] [--threads 2] [--name packed_conv] [--rounds 3]

Writes ``bench/results/<name>.{json,md}``; the console and the Markdown end with the targets.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

C_IN, C_OUT, K, HW = 128, 128, 3, 32
DENSITY = 0.05
POOL = 4
VARIANTS = ["torch conv2d", "F.spike_conv2d", "fp32 event", "int8", "int4", "int4 pruned 90% (taps)",
            "int4 pruned 90% (unstructured)"]


def plan(size: str) -> dict:
    if size == "smoke":
        return dict(configs=[[1, 1]], timing=bc.SMOKE_TIMING)
    timing = {"warmup": 2, "min_time": 0.05, "repeat": 5 if size == "quick" else 11}
    configs = [[1, 1], [1, 4], [1, 16], [4, 1], [4, 4]] if size == "quick" else \
        [[1, 1], [1, 4], [1, 16], [4, 1], [4, 4], [4, 16]]
    return dict(configs=configs, timing=timing)


def _conv() -> torch.nn.Conv2d:
    torch.manual_seed(0)
    return torch.nn.Conv2d(C_IN, C_OUT, K, padding=1)


def _pool(T: int, B: int) -> list:
    shape = (T, B, C_IN, HW, HW) if T > 1 else (B, C_IN, HW, HW)
    return [bc.spikes(shape, DENSITY, "packed_conv", T, B, i) for i in range(POOL)]


def _layer(variant: str):
    """The callable a user would write for ``variant`` (built in this process)."""
    conv = _conv()
    W, b = conv.weight.detach(), conv.bias.detach()
    if variant == "torch conv2d":
        f = torch.nn.functional.conv2d
        return lambda x: f(x.flatten(0, 1) if x.dim() == 5 else x, W, b, 1, 1), {}
    if variant == "F.spike_conv2d":
        import sparsesnn.functional as SF

        return lambda x: SF.spike_conv2d(x.flatten(0, 1) if x.dim() == 5 else x, W, b, 1, 1), {}
    if variant == "fp32 event":
        from sparsesnn.nn import SpikingConv2d

        m = SpikingConv2d.from_conv(conv)
        return m, {"module": m}
    from sparsesnn.nn import PackedSpikingConv2d
    from sparsesnn.ops.pruned_conv2d import tap_mask

    spec = "int8" if variant == "int8" else "int4"
    mask = None
    if "taps" in variant:
        mask = tap_mask(W, 0.9)
    elif "unstructured" in variant:
        mask = W.abs() > W.abs().flatten().kthvalue(int(0.9 * W.numel())).values
    m = PackedSpikingConv2d.from_float(conv, spec, mask=mask)
    return m, {"layout": m.layout, "model_bytes": m.model_bytes(),
               "zeros": float((m.dequantized_weight() == 0).float().mean())}


@torch.no_grad()
def run_variant(variant: str, configs: list, timing: dict) -> dict:
    """Seconds per call of ``variant`` for each ``[T, B]`` (runs in its own process)."""
    fn, info = _layer(variant)
    module = info.pop("module", None)
    out = {"variant": variant, **info, "times": []}
    for T, B in configs:
        pool = _pool(T, B)
        it = iter(range(10**9))
        t = bc.timeit(lambda: fn(pool[next(it) % POOL]), **timing)
        rec = {"T": T, "B": B, "s": t}
        if module is not None:
            rec["path"] = module.last_path
        out["times"].append(rec)
        print(f"{variant:>30} T={T} B={B:>2}: {t * 1e3:8.3f} ms", flush=True)
    return out


def merge_rounds(runs: list) -> dict:
    """One variant's record with each cell's time the median of its rounds (all kept)."""
    out = dict(runs[0])
    out["times"] = []
    for cells in zip(*(r["times"] for r in runs)):
        rec = dict(cells[0])
        rec["rounds_s"] = [c["s"] for c in cells]
        rec["s"] = statistics.median(rec["rounds_s"])
        out["times"].append(rec)
    return out


def targets(res: dict) -> list[list]:
    rows = []
    by = {v["variant"]: {(r["T"], r["B"]): r["s"] for r in v["times"]} for v in res["variants"]}
    for key in by["int4"]:
        tag = f"T={key[0]} B={key[1]}"
        for label, base, goal in (("fp32 event (SpikingConv2d)", "fp32 event", 2.0),
                                  ("F.spike_conv2d", "F.spike_conv2d", 2.0), ("torch conv2d", "torch conv2d", 6.0)):
            s = by[base][key] / by["int4"][key]
            rows.append([f"int4 vs {label}, {tag}", f"x{s:.2f}", f">= {goal:g}", s >= goal])
        for name in ("int4 pruned 90% (taps)", "int4 pruned 90% (unstructured)"):
            s = by["int4"][key] / by[name][key]
            rows.append([f"{name} vs int4, {tag}", f"x{s:.2f}", ">= 1.5", s >= 1.5])
    return rows


def markdown(res: dict) -> str:
    out = [f"Conv {C_IN} -> {C_OUT}, {K}x{K}, stride 1, padding 1, {HW}x{HW}, binary spikes at "
           f"{DENSITY:.0%}; {res['threads']} threads per process. Milliseconds per call: the median "
           f"of {res['rounds']} interleaved rounds (each a fresh process per variant, median of its calls); "
           f"`/proc/loadavg` at the start: {res['loadavg_start']}, at the end: {res['loadavg_end']}.", ""]
    configs = [(r["T"], r["B"]) for r in res["variants"][0]["times"]]
    hdr = ["variant", "layout", "weight bytes"] + [f"T={T} B={B}" for T, B in configs]
    rows = []
    for v in res["variants"]:
        row = [v["variant"], v.get("layout", "-"), v.get("model_bytes", "-")]
        row += [f"{r['s'] * 1e3:.3f}" + (f" ({r['path']})" if r.get("path") else "") for r in v["times"]]
        rows.append(row)
    out += [bc.markdown_table(hdr, rows), "", "## Targets", ""]
    out.append(bc.markdown_table(["check", "measured", "target", "met"], res["targets"]))
    return "\n".join(out) + "\n"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def main() -> None:
    p = bc.parser(__doc__)
    p.set_defaults(threads=2)
    p.add_argument("--name", default="packed_conv", help="result file name under bench/results/")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median per cell)")
    args = bc.start(p.parse_args())
    kw = plan(args.size)
    res = {"loadavg_start": loadavg(), "threads": torch.get_num_threads(), "size": args.size,
           "density": DENSITY, "pool": POOL}
    # Interleaved rounds (every variant once per round, each in a fresh process): load from
    # other tenants then hits all variants alike; each time is the median over the rounds.
    rounds = [[bc.isolated("bench_packed_conv:run_variant", variant=v, **kw) for v in VARIANTS]
              for _ in range(args.rounds)]
    res["rounds"] = args.rounds
    res["variants"] = [merge_rounds([r[i] for r in rounds]) for i in range(len(VARIANTS))]
    res["loadavg_end"] = loadavg()
    res["targets"] = targets(res)
    print(bc.write_results(args.name, res, markdown(res), args.machine))
    for t in res["targets"]:
        print(t)


if __name__ == "__main__":
    main()
