"""A user's batch-1 inference step: no-grad `F.lif` and `nn.LIF` (state carried between
calls, as when stepping through a stream) on x [4, 1, 2048], in a fresh process; per-call
microseconds, the median and the best of 9 rounds of 2000 calls after 2000 warm-up calls.

    python bench/as_user/lif_small.py
"""
import statistics, time
import torch
import sparsesnn.functional as F
from sparsesnn.nn import LIF
x = torch.randn(4, 1, 2048)
neuron = LIF()
with torch.no_grad():
    for name, call in (("F.lif", lambda: F.lif(x)), ("nn.LIF", lambda: neuron(x))):
        for _ in range(2000):
            call()
        rounds = []
        for _ in range(9):
            t0 = time.perf_counter()
            for _ in range(2000):
                call()
            rounds.append((time.perf_counter() - t0) / 2000 * 1e6)
        print(f"{name}: median {statistics.median(rounds):.2f} us, best {min(rounds):.2f} us per call, "
              f"threads {torch.get_num_threads()}")
