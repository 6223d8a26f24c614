"""One seeded mini-batch loop for heads trained on frozen features, with
per-epoch validation, early stopping and the best epoch's weights kept.

Data parallel (``data_parallel=True`` inside an initialised
``torch.distributed`` process group, as ``torchrun`` + Accelerate set up):
every process draws the same seeded batches; each takes its part of every
global batch, scales its mean loss to its share of the global mean, and the
gradients are summed across processes before each step, so every process
takes the one-process step (the same weights, up to float summation order).
Validation runs in every process on the same weights, so all take the same
early-stopping decision."""

from __future__ import annotations

import copy
import math

import torch


def random_batches(n: int, batch_size: int):
    """Batches of a fresh random permutation each epoch (``gen`` seeds it)."""
    def make(gen: torch.Generator):
        order = torch.randperm(n, generator=gen)
        return [order[s:s + batch_size] for s in range(0, n, batch_size)]
    return make


def fit_head(module: torch.nn.Module, loss_fn, n: int, *, epochs: int, batch_size: int, lr: float,
             weight_decay: float = 0.0, seed: int = 0, batches=None, on_epoch=None,
             monitor: tuple[str, bool] = ("srcc", False), patience: int | None = None,
             optimizer: str = "adamw", momentum: float = 0.9, data_parallel: bool = False) -> dict:
    """Train ``module`` with ``loss_fn(index_tensor) -> loss`` for ``epochs``.

    ``on_epoch(epoch, train_loss) -> dict | None`` validates; with a dict,
    the module's state at the best ``monitor`` value (name, lower_is_better)
    is restored at the end and training stops after ``patience`` epochs
    without improvement. Returns {"epochs_run", "best_epoch"}.
    """
    gen = torch.Generator().manual_seed(seed)
    rank, world = process_group() if data_parallel else (0, 1)
    params = [p for p in module.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batches = batches or random_batches(n, batch_size)
    key, lower = monitor
    best, best_state, best_epoch, waited = math.inf, None, 0, 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        module.train()
        total, steps = 0.0, 0
        for idx in batches(gen):
            if world > 1:
                if len(idx) < world:  # too small to give every process an image: skipped by all
                    continue
                mine = idx.tensor_split(world)[rank]
                loss = loss_fn(mine) * (len(mine) / len(idx))  # this process's share of the global mean
                opt.zero_grad()
                loss.backward()
                loss = sum_across_processes(params, loss.detach())
            else:
                loss = loss_fn(idx)
                opt.zero_grad()
                loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        module.eval()
        report = on_epoch(epoch, total / max(steps, 1)) if on_epoch else None
        if report is None or report.get(key) is None or not math.isfinite(report[key]):
            continue
        value = report[key] if lower else -report[key]
        if value < best:
            best, best_epoch, waited = value, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return {"epochs_run": epoch, "best_epoch": best_epoch or epoch}


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sum_across_processes(params: list, loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of ``params`` (and ``loss``) over all processes,
    in one flat all-reduce; returns the summed loss."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    k = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[k:k + n].view_as(g).clone()
        k += n
    return flat[-1]
