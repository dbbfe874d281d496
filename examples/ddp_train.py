"""Train, compress (ADMM prune + 4-bit quantize, with activity regularization) and deploy the
demo spiking MLP with DistributedDataParallel.

    torchrun --nproc_per_node=2 examples/ddp_train.py            # gloo on CPU
    torchrun --nproc_per_node=4 examples/ddp_train.py --hidden 2048 2048   # NCCL if CUDA is there

Every rank trains on its shard of the data (DistributedSampler); DDP all-reduces the gradients
(of the fused LIF kernels and the synaptic layers alike). The ADMM state (Z, U, masks, scales)
is computed from the parameters, which DDP keeps identical, and is checked bit-identical on
every rank after every epoch. Rank 0 deploys the compressed model on the packed kernels and
saves it. Run it as a plain ``python examples/ddp_train.py`` for a single process.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sparsesnn.compress import ADMM, ActivityRegularizer, evaluate, reset_states  # noqa: E402
from sparsesnn.compress import distributed as D  # noqa: E402
from sparsesnn.data import load_digits  # noqa: E402
from sparsesnn.deploy import deploy, layer_formats, load, save  # noqa: E402
from sparsesnn.models import SpikingMLP  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6, help="dense training epochs")
    p.add_argument("--admm-epochs", type=int, default=6)
    p.add_argument("--retrain-epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split over ranks)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="results/ddp")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds a collective may wait: a dead peer ends the run with an error")
    return p.parse_args()


def setup(timeout_s: float) -> torch.device:
    """Join the process group torchrun describes (env://); one process without torchrun."""
    if "RANK" not in os.environ:
        return torch.device("cpu")
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    if cuda:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        return dev
    # CPU: share the cores between the ranks instead of each taking all of them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    return torch.device("cpu")


def say(*a) -> None:
    if D.is_main():
        print(*a, flush=True)


def run_epochs(model, loader, sampler, opt, epochs, hooks, tag, device, epoch0=0, sched=None):
    """A plain DDP loop: compressors add ``penalty()`` to the loss and ``step()`` after the step."""
    for e in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch0 + e)  # a different shuffle every epoch, the same on all ranks
        model.train()
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            for h in hooks:
                loss = loss + h.penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for h in hooks:
                h.step()
            loss_sum += torch.tensor([float(loss.detach()) * len(y), len(y)], dtype=torch.float64, device=device)
        if sched is not None:
            sched.step()
        for h in hooks:
            if hasattr(h, "epoch_end"):
                h.epoch_end()
            if hasattr(h, "state_tensors"):
                D.check_consistent(h, f"{tag} state")  # every bit equal on every rank, or raise
        D.all_reduce_(loss_sum, "sum")
        say(f"[{tag}] epoch {e + 1}/{epochs}: loss {float(loss_sum[0] / loss_sum[1]):.4f}")


def main() -> None:
    args = parse()
    device = setup(args.timeout)
    t0 = time.perf_counter()
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    split = load_digits(seed=0)
    ws = D.world_size()
    if args.batch_size % ws:
        raise ValueError(f"--batch-size: {args.batch_size} is not divisible by {ws} ranks")
    # the data set is small: keep it on the device, so evaluate() needs no transfers
    train_ds = TensorDataset(split.x_train.to(device), split.y_train.to(device))
    test_ds = TensorDataset(split.x_test.to(device), split.y_test.to(device))
    sampler = DistributedSampler(train_ds, seed=0) if D.active() else None
    train = DataLoader(train_ds, batch_size=args.batch_size // ws, sampler=sampler,
                       shuffle=sampler is None)
    test_sampler = DistributedSampler(test_ds, shuffle=False) if D.active() else None
    test = DataLoader(test_ds, batch_size=256, sampler=test_sampler)
    say(f"[ddp] {ws} rank(s), backend {dist.get_backend() if D.active() else 'none'}, "
        f"{torch.get_num_threads()} thread(s) each; model 64->{'->'.join(map(str, args.hidden))}->10, "
        f"T={args.T}")

    core = SpikingMLP(split.features, args.hidden, split.classes, args.T, init_gain=4.0).to(device)
    model = D.ddp_wrap(core)  # DDP around the model; the model itself with one process

    # 1. dense training
    opt = torch.optim.Adam(model.parameters(), args.lr)
    run_epochs(model, train, sampler, opt, args.epochs, [], "dense", device)
    # evaluation is all-reduced (reduce=True), so every rank prints/decides on the same number
    dense_acc = evaluate(core, test, reduce=True)["acc"]
    say(f"[dense] test accuracy {dense_acc:.4f}")

    # 2. ADMM: fc2 95% sparse, all layers 4-bit; activity regularization on global spike rates
    last = f"fc{len(args.hidden) + 1}"
    targets = {f"fc{i + 1}": {"sparsity": 0.95 if 0 < i < len(args.hidden) else None, "bits": 4}
               for i in range(len(args.hidden) + 1)}
    admm = ADMM(model, targets, rho=0.05, proximal=0.03)
    act = ActivityRegularizer(model, 0.3)
    opt = torch.optim.Adam(model.parameters(), args.lr)
    run_epochs(model, train, sampler, opt, args.admm_epochs, [admm, act], "ADMM", device,
               epoch0=args.epochs)
    admm.finalize()
    opt = torch.optim.Adam(model.parameters(), args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(args.retrain_epochs, 1))
    run_epochs(model, train, sampler, opt, args.retrain_epochs, [admm, act], "retrain", device,
               epoch0=args.epochs + args.admm_epochs, sched=sched)
    act.remove()
    admm.remove()
    comp_acc = evaluate(core, test, reduce=True)["acc"]
    say(f"[compressed] test accuracy {comp_acc:.4f}, sparsity "
        + ", ".join(f"{n} {s:.2f}" for n, s in admm.sparsity().items()))

    # 3. rank 0 deploys on the packed kernels and saves; the others wait at the barrier
    reset_states(core)  # the last batch's membrane state holds a graph: deepcopy refuses it
    if D.is_main():
        deployed = deploy(core.cpu() if device.type == "cuda" else core)
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "deployed.pt")
        save(deployed, path)
        deployed = load(path)
        cpu_test = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=256)
        dep_acc = evaluate(deployed, cpu_test)["acc"]
        fmt = {n: f"{f['format']}/{f['layout']}" for n, f in layer_formats(deployed).items()}
        print(f"[deploy] saved {path}; deployed accuracy {dep_acc:.4f}; formats {fmt}", flush=True)
        if last not in fmt:
            raise RuntimeError(f"deploy: layer {last} was not packed: {fmt}")
    if D.active():
        dist.barrier()
    say(f"[ddp] done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    try:
        main()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
