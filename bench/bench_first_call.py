"""First call against steady state of the public API, each case in its own fresh process.

A user's first call pays for whatever the library does lazily (kernel layouts built once per
weight, dispatch measurements, imports inside torch). Issue 10's bound: at most ~0.2 s above
the steady-state call. Imports are not counted (the case is built, untimed, after them).

    python bench/bench_first_call.py [--smoke]

Writes ``bench/results/first_call.{json,md}``.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

BOUND_S = 0.2


def _case(name: str, small: bool):
    """``(description, run)`` for case ``name``; everything but ``run()`` is untimed setup."""
    import torch

    import sparsesnn.functional as SF
    from sparsesnn.nn import LIF, PackedSpikingLinear, SpikingConv2d, SpikingLinear
    from sparsesnn.quant import QuantSpec

    d = 4 if small else 1  # --smoke: smaller shapes
    if name == "lif":
        x = (torch.randn(16, 65536 // d) + 0.5).requires_grad_(True)
        return f"`F.lif` fwd+bwd, x [16, {65536 // d}]", lambda: SF.lif(x)[0].sum().backward()
    if name == "lif_small":
        lif, x = LIF(), torch.randn(4, 1, 2048)

        def run():
            with torch.no_grad():
                lif.reset()
                lif(x)
        return "`nn.LIF()` no grad, x [4, 1, 2048]", run
    if name == "linear":
        n = 2048 // d
        layer, s = SpikingLinear(n, n), bc.spikes((128, n), 0.05, "first")
        return f"`SpikingLinear({n}, {n})` fwd+bwd, 128 rows, 5% spikes", lambda: layer(s).sum().backward()
    if name == "conv":
        c = 64 // d
        layer, s = SpikingConv2d(c, c, 3, padding=1), bc.spikes((8, c, 32, 32), 0.05, "first")
        return f"`SpikingConv2d({c}, {c}, 3)` fwd+bwd, [8, {c}, 32, 32], 5% spikes", lambda: layer(s).sum().backward()
    if name == "pruned":
        K = 4096 // d
        lin = torch.nn.Linear(K, K)
        w = lin.weight.detach()
        mask = w.abs() > w.abs().flatten().kthvalue(int(0.9 * K * K)).values
        layer = PackedSpikingLinear.from_float(lin, QuantSpec("int4"), mask=mask)
        s = bc.spikes((1, K), 0.05, "first")

        def run():
            with torch.no_grad():
                layer(s)
        return f"`PackedSpikingLinear` int4, 90% pruned, {K}x{K}, batch 1, no grad", run
    raise ValueError(f"case: unknown {name!r}")


def first_call(case: str, small: bool = False) -> dict:
    """In this fresh process: seconds of the first call of ``case`` and the median of the next 5."""
    what, run = _case(case, small)
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    steady = []
    for _ in range(5):
        t0 = time.perf_counter()
        run()
        steady.append(time.perf_counter() - t0)
    return {"what": what, "first_s": first, "steady_s": statistics.median(steady)}


def main() -> None:
    args = bc.start(bc.parser(__doc__).parse_args())
    small = args.size == "smoke"
    results = {c: bc.isolated("bench_first_call:first_call", case=c, small=small)
               for c in ("lif", "lif_small", "linear", "conv", "pruned")}
    rows = []
    for r in results.values():
        extra = r["first_s"] - r["steady_s"]
        rows.append([r["what"], r["first_s"] * 1e3, r["steady_s"] * 1e3, extra * 1e3, extra <= BOUND_S])
    md = (f"Each case in a fresh process, imports excluded; bound: first call at most {BOUND_S} s above "
          "the steady state (median of the next 5 calls).\n\n"
          + bc.markdown_table(["call", "first ms", "steady ms", "extra ms", f"<= {BOUND_S} s"], rows))
    path = bc.write_results("first_call", {"bound_s": BOUND_S, "cases": results}, md, args.machine)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
