"""What the allocator setting applied at ``import sparsesnn`` buys: ``nn.LIF()`` at T=32,
N=2^18 (32 MiB per output) in two fresh processes, one with the default setting and one with
``SPARSESNN_TUNE_ALLOCATOR=0`` (glibc's defaults), plus each process's peak resident memory.

    python bench/bench_allocator.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

CASE = [32, 2**18]


def main() -> None:
    args = bc.start(bc.parser(__doc__).parse_args())
    cases = [CASE] if args.size != "smoke" else [[4, 2**12]]
    timing = {"repeat": 3, "min_time": 0.01} if args.size == "smoke" else {"repeat": 9, "min_time": 0.2}
    runs = {}
    for label, value in (("tuned at import (default)", "1"), ("glibc defaults (SPARSESNN_TUNE_ALLOCATOR=0)", "0")):
        res = bc.isolated("bench_lif:sweep_sparsesnn", env={"SPARSESNN_TUNE_ALLOCATOR": value},
                          cases=cases, device="cpu", timing=timing)
        runs[label] = {"times_s": res["cases"][0], "process": bc.PROCESSES[-1]}
    rows = [[label, r["times_s"]["infer"] * 1e3, r["times_s"]["fwd_bwd"] * 1e3,
             r["process"].get("allocator_tuned"), round(r["process"].get("max_rss_mb", 0))]
            for label, r in runs.items()]
    md = (f"`sparsesnn.nn.LIF()` at T={cases[0][0]}, N={cases[0][1]}, each setting in its own fresh "
          "process.\n\n" + bc.markdown_table(
              ["allocator", "fwd ms", "fwd+bwd ms", "tuned (info())", "peak RSS MiB"], rows))
    path = bc.write_results("allocator", {"case": cases[0], "runs": runs}, md, args.machine)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
