"""One seeded mini-batch loop for heads trained on frozen features, with
per-epoch validation, early stopping and the best epoch's weights kept."""

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
             optimizer: str = "adamw", momentum: float = 0.9) -> dict:
    """Train ``module`` with ``loss_fn(index_tensor) -> loss`` for ``epochs``.

    ``on_epoch(epoch, train_loss) -> dict | None`` validates; with a dict,
    the module's state at the best ``monitor`` value (name, lower_is_better)
    is restored at the end and training stops after ``patience`` epochs
    without improvement. Returns {"epochs_run", "best_epoch"}.
    """
    gen = torch.Generator().manual_seed(seed)
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
