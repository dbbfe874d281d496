"""Native plan (sparsesnn.runtime) vs eager deployed vs dense PyTorch vs SpikingJelly / snnTorch.

The demo network (64-2048-2048-10 spiking MLP, T=4, thermometer encoder, mean readout): dense
fp32 PyTorch (nn.Linear + sparsesnn LIF, the demo's baseline), the same network written with
SpikingJelly (`layer.Linear` + `neuron.LIFNode`) and with snnTorch (`nn.Linear` + `snn.Leaky`
stepped over T), each in its own process with the same fp32 weights; then the compressed model
(fc2 pruned, all layers int4) deployed eager and as a native plan; the plan once more with
spikes passed between layers as dense fp32 maps instead of active-input lists
(``SSNN_SPIKE_LISTS=0``, same results) shows what the lists gain. Batch 1, 8, 64: latency
(median) and throughput. Memory floor: the bytes the plan reads per call (its weight buffers) /
a read bandwidth measured in the same run (sum over a 64 MiB buffer, so DRAM: a plan whose
weights stay in cache can beat it).

Two sets of weights, each measured in this run:
- "demo model": trained here by the demo's own pipeline (``sparsesnn demo --no-ablation``:
  dense training, ADMM pruning + int4 with activity regularization, masked retraining, deploy),
  the model the issue's targets name. The dense baselines run the dense model the demo trained
  first; eager and plan run the deployed compressed model. Likewise the conv demo model
  (``sparsesnn demo --model conv``). Training takes minutes (``--no-demo`` skips it).
- "synthetic": seeded weights scaled so the hidden layers fire about as often as the trained
  model's, fc2 keeping ``--keep`` of its weights; plus two conv nets with seeded excitatory
  weights (LeNet on 28x28, a small VGG on 32x32).

    python bench/bench_runtime.py [--quick|--smoke] [--threads 2] [--no-demo]
"""
from __future__ import annotations

import os
import tempfile
import time

import _common as bc
import torch

SIZES = (64, 2048, 2048, 10)
T = 4
BATCHES = (1, 8, 64)
PEERS = ("spikingjelly", "snntorch")


def _weights(src: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """fp32 ``(W [N, K], b [N])`` per layer: from ``src["dense"]`` (a trained demo model's
    weights, saved by :func:`train_demo`; loaded without unpickling code) or seeded, fc2
    keeping a ``src["keep"]`` fraction."""
    if "dense" in src:
        sd = torch.load(src["dense"], weights_only=True)
        return [(sd[f"fc{i + 1}.weight"], sd[f"fc{i + 1}.bias"]) for i in range(len(SIZES) - 1)]
    keep = src["keep"]
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


def _linears(src: dict) -> list[torch.nn.Linear]:
    layers = []
    for w, b in _weights(src):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers.append(lin)
    return layers


def _sparsesnn_float(src: dict):
    from sparsesnn.models import SpikingMLP

    m = SpikingMLP(SIZES[0], SIZES[1:-1], SIZES[-1], T=T)
    for i, lin in enumerate(_linears(src)):
        getattr(m, f"fc{i + 1}").load_state_dict(lin.state_dict())
    return m.eval()


def run_dense(src: dict, timing: dict) -> dict:
    return _time(_sparsesnn_float(src), timing)


def run_sparsesnn(src: dict, timing: dict) -> dict:
    """Eager deployed and native plan of the int4, pruned model; plus the memory floor."""
    from sparsesnn import metrics, runtime
    from sparsesnn.deploy import deploy, load

    deployed = load(src["deployed"]) if "deployed" in src else deploy(_sparsesnn_float(src), default_bits=4)
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


def run_conv(name: str, timing: dict, deployed: str | None = None) -> dict:
    """A conv net, eager deployed vs native plan: the conv demo model (``deployed``, written by
    :func:`train_demo`; input ``[B, 1, 8, 8]``) or a seeded one of ``CONV_NETS`` (excitatory
    weights so every layer fires, int4)."""
    from sparsesnn import metrics, models, runtime
    from sparsesnn.deploy import deploy, load

    if deployed is not None:
        deployed, shape = load(deployed), (1, 8, 8)
    else:
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


def train_demo(model: str, folder: str, smoke: bool) -> dict:
    """Trains the demo's model as ``sparsesnn demo [--model conv] --no-ablation`` does (its
    DemoConfig, data, dense training, ADMM compression and deploy; ``smoke``: one epoch per
    phase on a data subset, numbers meaningless) and saves the dense fp32 weights
    (``dense.pt``, a state dict) and the deployed model (``deployed.ssnn``, deploy.save)."""
    from sparsesnn import demo
    from sparsesnn.compress import evaluate, fit
    from sparsesnn.data import loaders
    from sparsesnn.demo_conv import CONV_EPOCHS, as_images, conv_model
    from sparsesnn.deploy import deploy, save
    from sparsesnn.models import SpikingMLP

    t0 = time.perf_counter()
    cfg = demo.DemoConfig(model=model, ablate_activity=False, progress=False, quick=smoke)
    if model == "conv":  # as the CLI sets it
        cfg.epochs = cfg.admm_epochs = cfg.retrain_epochs = CONV_EPOCHS
    if smoke:
        cfg.epochs = cfg.admm_epochs = cfg.retrain_epochs = 1
    cfg.validate()
    torch.manual_seed(cfg.seed)
    split = demo._load(cfg)
    if model == "conv":
        split = as_images(split)
    train, test = loaders(split, cfg.batch_size, cfg.seed)
    if model == "conv":
        dense = conv_model(cfg, split)
    else:
        dense = SpikingMLP(split.features, cfg.hidden, split.classes, cfg.T, init_gain=4.0)
        assert (split.features, *cfg.hidden, split.classes) == SIZES and cfg.T == T
    fit(dense, train, torch.optim.Adam(dense.parameters(), cfg.lr), epochs=cfg.epochs, progress=False)
    comp = demo._compress(cfg, dense, train, test, cfg.activity, "")[0]
    deployed = deploy(comp)
    torch.save(dense.state_dict(), os.path.join(folder, "dense.pt"))
    save(deployed, os.path.join(folder, "deployed.ssnn"))
    return {"accuracy_deployed": evaluate(deployed, test)["acc"], "train_seconds": time.perf_counter() - t0,
            "epochs_per_phase": cfg.epochs}


def run_spikingjelly(src: dict, timing: dict) -> dict:
    from spikingjelly.activation_based import functional, layer, neuron

    mods = []
    for i, lin in enumerate(_linears(src)):
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


def run_snntorch(src: dict, timing: dict) -> dict:
    import snntorch as snn

    lins = _linears(src)
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


def mlp_section(src: dict, timing: dict) -> tuple[dict, dict]:
    """All MLP implementations on the weights of ``src``, each in its own process."""
    res = {"dense_pytorch": bc.isolated("bench_runtime:run_dense", src=src, timing=timing)}
    for peer in PEERS:
        r = bc.isolated(f"bench_runtime:run_{peer}", optional=True, src=src, timing=timing)
        if r is not None:
            res[peer] = r
    ours = bc.isolated("bench_runtime:run_sparsesnn", src=src, timing=timing)
    for k in ("eager_deployed", "native_plan_fp32_spikes", "native_plan"):
        res[k] = ours.pop(k)
    ours["memory_floor_s"] = ours["plan_weight_bytes"] / ours["read_bandwidth_Bps"]
    return res, ours


def mlp_markdown(title: str, res: dict, ours: dict) -> str:
    rows = []
    for b in map(str, BATCHES):
        plan_s = res["native_plan"][b]["latency_s"]
        for n in res:
            r = res[n][b]
            rows.append([b, n, r["latency_s"] * 1e6, r["samples_per_s"], f"{r['latency_s'] / plan_s:.1f}x"])
    floor_s = ours["memory_floor_s"]
    return (f"{title} {ours['spikes_per_sample']:.0f} hidden spikes per sample. Plan and eager deployed "
            f"agree on {100 * ours['plan_agrees_with_eager']:.0f}% of predictions.\n\n"
            + bc.markdown_table(["batch", "implementation", "latency us", "samples/s", "native plan faster by"], rows)
            + f"\n\nMemory floor: the plan reads {ours['plan_weight_bytes']:,} bytes of weights per call "
            f"(deployed model buffers: {ours['deployed_model_bytes']:,} bytes); read bandwidth "
            f"{ours['read_bandwidth_Bps'] / 1e9:.1f} GB/s in this run -> floor {floor_s * 1e6:.1f} us; "
            f"native plan at batch 1: {res['native_plan']['1']['latency_s'] / floor_s:.2f}x the floor.")


def main() -> None:
    p = bc.parser(__doc__)
    p.add_argument("--keep", type=float, default=0.08, help="synthetic weights: fraction of fc2 weights kept")
    p.add_argument("--no-demo", action="store_true", help="skip training the demo models (synthetic weights only)")
    args = bc.start(p.parse_args())
    timing = bc.SMOKE_TIMING if args.size == "smoke" else {"warmup": 3, "repeat": 7, "min_time": 0.05}
    net = f"{'-'.join(map(str, SIZES))}, T={T}"
    payload: dict = {"sizes": SIZES, "T": T, "keep": args.keep}
    md = ""
    conv: dict = {}
    if not args.no_demo:
        folder = tempfile.mkdtemp(prefix="bench_runtime_")
        trained = {}
        for model in ("mlp", "conv"):
            os.makedirs(os.path.join(folder, model), exist_ok=True)
            print(f"training the {model} demo model with the demo's pipeline (minutes)...", flush=True)
            trained[model] = bc.isolated("bench_runtime:train_demo", model=model,
                                         folder=os.path.join(folder, model), smoke=args.size == "smoke")
        m = trained["mlp"]
        src = {"dense": os.path.join(folder, "mlp", "dense.pt"), "deployed": os.path.join(folder, "mlp", "deployed.ssnn")}
        res, ours = mlp_section(src, timing)
        payload["demo_model"] = {"training": trained, "results": res, "sparsesnn": ours}
        md += mlp_markdown(
            f"**Demo model** (network {net}), trained in this run by the demo's pipeline "
            f"({m['epochs_per_phase']} epochs per phase, {m['train_seconds']:.0f} s; deployed accuracy "
            f"{100 * m['accuracy_deployed']:.1f}%): dense baselines run the dense model the demo trained "
            f"first, eager and plan the deployed compressed model.", res, ours) + "\n\n"
        conv["conv_demo (trained)"] = bc.isolated("bench_runtime:run_conv", name="conv_demo", timing=timing,
                                                  deployed=os.path.join(folder, "conv", "deployed.ssnn"))
        conv["conv_demo (trained)"]["training"] = trained["conv"]
    res, ours = mlp_section({"keep": args.keep}, timing)
    payload.update({"results": res, "sparsesnn": ours, "memory_floor_s": ours["memory_floor_s"]})
    md += mlp_markdown(
        f"**Synthetic weights** (network {net}; compressed: int4, fc2 keeps {args.keep:.0%} of its weights; "
        "seeded, scaled to fire about as often as the trained model).", res, ours)
    for name in CONV_NETS:
        conv[f"{name} (synthetic)"] = bc.isolated("bench_runtime:run_conv", name=name, timing=timing)
    crow = [[name, b, r["times"][b]["eager_s"] * 1e6, r["times"][b]["plan_s"] * 1e6,
             f"{r['times'][b]['eager_s'] / r['times'][b]['plan_s']:.1f}x", f"{r['spikes_per_sample']:.0f}",
             f"{100 * r['plan_agrees_with_eager']:.0f}%"]
            for name, r in conv.items() for b in map(str, BATCHES)]
    load = open("/proc/loadavg").read().split()[:3]
    md += ("\n\nConv nets, eager deployed vs native plan in the same process: the conv demo model "
           "(`sparsesnn demo --model conv`, trained in this run; input 1x8x8) and two seeded nets "
           "(int4, excitatory weights so every layer fires):\n\n"
           + bc.markdown_table(["net", "batch", "eager us", "plan us", "plan faster by", "spikes/sample",
                                "same predictions"], crow)
           + f"\n\n/proc/loadavg at the end: {' '.join(load)}.")
    payload["conv"] = conv
    payload["loadavg"] = load
    path = bc.write_results("runtime", payload, md, args.machine)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
