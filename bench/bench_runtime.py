"""Native plan (sparsesnn.runtime) vs eager deployed vs dense PyTorch vs SpikingJelly / snnTorch.

The demo network (64-2048-2048-10 spiking MLP, T=4, thermometer encoder, mean readout): dense
fp32 PyTorch (nn.Linear + sparsesnn LIF, the demo's baseline), the same network written with
SpikingJelly (`layer.Linear` + `neuron.LIFNode`) and with snnTorch (`nn.Linear` + `snn.Leaky`
stepped over T), each in its own process with the same fp32 weights; then the compressed model
(fc2 pruned to `--keep`, all layers int4, as the demo's ADMM produces) deployed eager and as a
native plan; the plan once more with spikes passed between layers as dense fp32 maps instead
of active-input lists (``SSNN_SPIKE_LISTS=0``, same results) shows what the lists gain. Batch
1, 8, 64: latency (median) and throughput. Memory floor: the bytes the plan
reads per call (its weight buffers) / a read bandwidth measured in the same run (sum over a
64 MiB buffer, so DRAM: a plan whose weights stay in cache can beat it).

    python bench/bench_runtime.py [--quick|--smoke] [--threads 2]

Weights are synthetic (seeded, identical in every process), scaled so the hidden layers fire
about as often as the trained demo model's (spikes/sample are reported); `sparsesnn demo`
reports the trained model's native latency.
"""
from __future__ import annotations

import os

import _common as bc
import torch

SIZES = (64, 2048, 2048, 10)
T = 4
BATCHES = (1, 8, 64)
PEERS = ("spikingjelly", "snntorch")


def _weights(keep: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded fp32 ``(W [N, K], b [N])`` per layer; fc2 keeps a ``keep`` fraction of weights."""
    out = []
    for i, (k, n) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        g = bc.generator("runtime-weights", i)
        bound = k ** -0.5
        w = (torch.rand(n, k, generator=g) * 2 - 1) * bound * 4.0
        b = (torch.rand(n, generator=g) * 2 - 1) * bound
        if i == 1:
            w = w * (torch.rand(n, k, generator=g) < keep).float() / keep ** 0.5
        out.append((w, b))
    return out


def _inputs(batch: int) -> torch.Tensor:
    return torch.rand(batch, SIZES[0], generator=bc.generator("runtime-input", batch))


def _thresholds() -> torch.Tensor:
    return ((torch.arange(T, dtype=torch.float32) + 0.5) / T).view(T, 1, 1)


def _time(fn, timing) -> dict:
    out = {}
    for b in BATCHES:
        x = _inputs(b)
        with torch.inference_mode():
            s = bc.timeit(lambda: fn(x), **timing)
        out[str(b)] = {"latency_s": s, "samples_per_s": b / s}
    return out


def _linears(keep: float) -> list[torch.nn.Linear]:
    layers = []
    for w, b in _weights(keep):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers.append(lin)
    return layers


def _sparsesnn_float(keep: float):
    from sparsesnn.models import SpikingMLP

    m = SpikingMLP(SIZES[0], SIZES[1:-1], SIZES[-1], T=T)
    for i, lin in enumerate(_linears(keep)):
        getattr(m, f"fc{i + 1}").load_state_dict(lin.state_dict())
    return m.eval()


def run_dense(keep: float, timing: dict) -> dict:
    return _time(_sparsesnn_float(keep), timing)


def run_sparsesnn(keep: float, timing: dict) -> dict:
    """Eager deployed and native plan of the int4, pruned model; plus the memory floor."""
    from sparsesnn import metrics, runtime
    from sparsesnn.deploy import deploy

    dense = _sparsesnn_float(keep)
    deployed = deploy(dense, default_bits=4)
    plan = runtime.compile(deployed, _inputs(1))
    os.environ["SSNN_SPIKE_LISTS"] = "0"  # read when a plan loads: this one passes fp32 spike maps
    plan_fp32_spikes = runtime.compile(deployed, _inputs(1))
    del os.environ["SSNN_SPIKE_LISTS"]
    x = _inputs(64)
    with torch.inference_mode():
        agree = float((plan(x).argmax(1) == deployed(x).argmax(1)).float().mean())
        spikes = metrics.report(deployed, x)["total"]["spikes_per_sample"]
    big = torch.ones(16 * 2**20)  # 64 MiB: read bandwidth from memory, not cache
    read_bw = big.numel() * 4 / bc.timeit(lambda: big.sum(), **timing)
    return {"eager_deployed": _time(deployed, timing), "native_plan": _time(plan, timing),
            "native_plan_fp32_spikes": _time(plan_fp32_spikes, timing),
            "plan_weight_bytes": plan.weight_bytes(), "deployed_model_bytes": sum(
                m.model_bytes() for m in deployed.modules() if hasattr(m, "model_bytes")),
            "read_bandwidth_Bps": read_bw, "plan_agrees_with_eager": agree,
            "spikes_per_sample": spikes}


CONV_NETS = {
    "lenet_mnist": ("SpikingLeNet", {"in_channels": 1, "num_classes": 10, "T": T}, (1, 28, 28)),
    "vgg_small_cifar": ("SpikingVGG", {"cfg": [32, "M", 64, "M", 64, "M"], "in_channels": 3,
                                       "num_classes": 10, "T": T, "image_size": 32}, (3, 32, 32)),
}


def run_conv(name: str, timing: dict) -> dict:
    """A conv net (seeded, excitatory weights so every layer fires, int4): eager vs plan."""
    from sparsesnn import metrics, models, runtime
    from sparsesnn.deploy import deploy

    cls, kwargs, shape = CONV_NETS[name]
    torch.manual_seed(0)
    model = getattr(models, cls)(**kwargs).eval()
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "weight", None) is not None and m.weight.dim() in (2, 4):
                m.weight.abs_().mul_(1.5)
    deployed = deploy(model, default_bits=4)
    x1 = torch.rand(1, *shape, generator=bc.generator("conv-input", name))
    plan = runtime.compile(deployed, x1)
    out = {}
    for b in BATCHES:
        x = torch.rand(b, *shape, generator=bc.generator("conv-input", name, b))
        with torch.inference_mode():
            e = bc.timeit(lambda: deployed(x), **timing)
            p = bc.timeit(lambda: plan(x), **timing)
        out[str(b)] = {"eager_s": e, "plan_s": p}
    x = torch.rand(8, *shape, generator=bc.generator("conv-input", name, "check"))
    with torch.inference_mode():
        same = float((plan(x).argmax(1) == deployed(x).argmax(1)).float().mean())
        spikes = metrics.report(deployed, x)["total"]["spikes_per_sample"]
    return {"times": out, "plan_agrees_with_eager": same, "spikes_per_sample": spikes,
            "plan_weight_bytes": plan.weight_bytes()}


def run_spikingjelly(keep: float, timing: dict) -> dict:
    from spikingjelly.activation_based import functional, layer, neuron

    mods = []
    for i, lin in enumerate(_linears(keep)):
        sj = layer.Linear(lin.in_features, lin.out_features, step_mode="m")
        sj.load_state_dict(lin.state_dict())
        mods.append(sj)
        if i < len(SIZES) - 2:
            mods.append(neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m"))
    net = torch.nn.Sequential(*mods).eval()
    thr = _thresholds()

    def fwd(x):
        functional.reset_net(net)
        return net((x.unsqueeze(0) > thr).float()).mean(0)
    return _time(fwd, timing)


def run_snntorch(keep: float, timing: dict) -> dict:
    import snntorch as snn

    lins = _linears(keep)
    lifs = [snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero") for _ in lins[:-1]]
    thr = _thresholds()

    def fwd(x):
        s = (x.unsqueeze(0) > thr).float()
        mems = [lif.init_leaky() for lif in lifs]
        outs = []
        for t in range(T):
            h = s[t]
            for j, lin in enumerate(lins):
                h = lin(h)
                if j < len(lifs):
                    h, mems[j] = lifs[j](h, mems[j])
            outs.append(h)
        return torch.stack(outs).mean(0)
    return _time(fwd, timing)


def main() -> None:
    p = bc.parser(__doc__)
    p.add_argument("--keep", type=float, default=0.08, help="fraction of fc2 weights kept (demo: ~0.05-0.08)")
    args = bc.start(p.parse_args())
    timing = bc.SMOKE_TIMING if args.size == "smoke" else {"warmup": 3, "repeat": 7, "min_time": 0.05}
    res = {"dense_pytorch": bc.isolated("bench_runtime:run_dense", keep=args.keep, timing=timing)}
    for peer in PEERS:
        r = bc.isolated(f"bench_runtime:run_{peer}", optional=True, keep=args.keep, timing=timing)
        if r is not None:
            res[peer] = r
    ours = bc.isolated("bench_runtime:run_sparsesnn", keep=args.keep, timing=timing)
    for k in ("eager_deployed", "native_plan_fp32_spikes", "native_plan"):
        res[k] = ours.pop(k)
    floor_s = ours["plan_weight_bytes"] / ours["read_bandwidth_Bps"]
    names = list(res)
    rows = []
    for b in map(str, BATCHES):
        plan_s = res["native_plan"][b]["latency_s"]
        for n in names:
            r = res[n][b]
            rows.append([b, n, r["latency_s"] * 1e6, r["samples_per_s"], f"{r['latency_s'] / plan_s:.1f}x"])
    headers = ["batch", "implementation", "latency us", "samples/s", "native plan faster by"]
    load = open("/proc/loadavg").read().split()[:3]
    md = (f"Demo network {'-'.join(map(str, SIZES))}, T={T}; compressed: int4, fc2 keeps "
          f"{args.keep:.0%} of its weights. Same fp32 weights in every dense process. "
          f"{ours['spikes_per_sample']:.0f} hidden spikes per sample (the trained demo model: ~1000). "
          f"Plan and eager deployed agree on {100 * ours['plan_agrees_with_eager']:.0f}% of predictions.\n\n"
          + bc.markdown_table(headers, rows)
          + f"\n\nMemory floor: the plan reads {ours['plan_weight_bytes']:,} bytes of weights per call "
          f"(deployed model buffers: {ours['deployed_model_bytes']:,} bytes); read bandwidth "
          f"{ours['read_bandwidth_Bps'] / 1e9:.1f} GB/s in this run -> floor {floor_s * 1e6:.1f} us; "
          f"native plan at batch 1: {res['native_plan']['1']['latency_s'] / floor_s:.2f}x the floor. "
          f"/proc/loadavg at the end: {' '.join(load)}.")
    payload = {"sizes": SIZES, "T": T, "keep": args.keep, "results": res, "sparsesnn": ours,
               "memory_floor_s": floor_s, "loadavg": load}
    conv = {name: bc.isolated("bench_runtime:run_conv", name=name, timing=timing) for name in CONV_NETS}
    crow = [[name, b, r["times"][b]["eager_s"] * 1e6, r["times"][b]["plan_s"] * 1e6,
             f"{r['times'][b]['eager_s'] / r['times'][b]['plan_s']:.1f}x", f"{r['spikes_per_sample']:.0f}"]
            for name, r in conv.items() for b in map(str, BATCHES)]
    md += ("\n\nConv nets (int4, seeded excitatory weights so every layer fires; eager deployed vs "
           "native plan, same process):\n\n"
           + bc.markdown_table(["net", "batch", "eager us", "plan us", "plan faster by", "spikes/sample"], crow))
    payload["conv"] = conv
    path = bc.write_results("runtime", payload, md, args.machine)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
