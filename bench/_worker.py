"""Run one benchmark function in this fresh process and print its JSON result.

    python bench/_worker.py module:function '<json kwargs>'

The last stdout line is ``{"result": ..., "process": ...}``; everything the function prints
goes to stderr (also at the file-descriptor level, for native code), so stdout holds only that
line. ``process`` says what this process was: threads, and which SNN libraries it imported
(the proof that a baseline process never loaded sparsesnn). Used by ``_common.isolated``.
Exit code 3: the function failed to import a library (an optional peer is not installed).
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

LIBRARIES = ("sparsesnn", "spikingjelly", "snntorch", "norse")
EXIT_IMPORT_ERROR = 3  # = _common.EXIT_IMPORT_ERROR (not imported from there: it imports torch)


def process_info() -> dict:
    info = {"pid": os.getpid(), "libraries": [n for n in LIBRARIES if n in sys.modules],
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    if "sparsesnn" in sys.modules:
        info["allocator_tuned"] = sys.modules["sparsesnn"].info().get("allocator_tuned")
    return info


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or ":" not in argv[1]:
        print(__doc__, file=sys.stderr)
        return 2
    module, _, name = argv[1].partition(":")
    kwargs = json.loads(argv[2]) if len(argv) == 3 else {}
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # prints (Python or native) go to stderr; stdout is kept for the result
    sys.stdout = sys.stderr
    try:
        fn = getattr(importlib.import_module(module), name)
        threads = os.environ.get("SPARSESNN_BENCH_THREADS")
        if threads and "torch" in sys.modules:  # the parent's thread count (benchmark modules
            sys.modules["torch"].set_num_threads(int(threads))  # import torch; trivial targets need not)
        result = fn(**kwargs)
    except ImportError:
        traceback.print_exc()
        return EXIT_IMPORT_ERROR
    result_out.write(json.dumps({"result": result, "process": process_info()}, default=str) + "\n")
    result_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
