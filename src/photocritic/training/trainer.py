"""The one Trainer for methods that train the image tower (``finetune``).

Hugging Face Accelerate runs it unchanged on one CPU, one GPU, or many
processes (``torchrun --nproc_per_node N -m photocritic train ...``;
``accelerate launch -m photocritic train ...`` on GPUs):

* data order: a permutation of the training images seeded by (seed, epoch);
  every global batch of ``batch_size`` images is split across the processes,
  and each process's loss is its share of the *global* mean
  (sum of its per-image losses / global batch size x processes), so DDP's
  gradient average equals the one-process gradient exactly;
* gradient accumulation: a global batch is processed in ``accumulate``
  micro-batches per process, gradients synchronised on the last;
* mixed precision: bf16 autocast with ``--precision bf16`` (or ``auto`` where
  bf16 is native);
* a checkpoint after every epoch (model, optimiser, epoch, early-stopping
  state, RNG state, metrics); ``--resume`` continues from it bit for bit;
* validation predictions are gathered from every process; every process
  computes the same metrics and so takes the same early-stopping decision;
  only the main process writes.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..losses import emd
from ..methods.base import Targets
from .pixelcache import EpochLoader, decode_cached, make_caches, report_caches

CHECKPOINT = "checkpoint"


def hflip(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror left-right with probability 1/2."""
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


#: Augmentation hooks by name: ``fn(uint8 HWC pixels, rng) -> pixels``, applied
#: to training images only (the paper used none: resize + centre crop).
AUGMENTATIONS = {"hflip": hflip}


class ImageRatings(torch.utils.data.Dataset):
    """(uint8 HWC pixels, 10-bin target, index) per image; an unreadable
    image gives None (dropped by :func:`collate` and counted). ``augment``
    names an entry of :data:`AUGMENTATIONS`; its randomness is seeded by
    (seed, epoch, image), so a resumed run sees the same augmented images.
    ``pixels``: a :class:`~photocritic.training.pixelcache.PixelCache` of the
    decoded images (before augmentation), shared by the loader's workers."""

    def __init__(self, paths: list[str], distribution: np.ndarray, preprocess, augment: str | None = None,
                 seed: int = 0, pixels=None):
        from ..errors import UsageError

        if augment is not None and augment not in AUGMENTATIONS:
            raise UsageError(f"unknown augmentation {augment!r} (known: {', '.join(AUGMENTATIONS)})")
        self.paths = paths
        self.q = torch.as_tensor(distribution / distribution.sum(1, keepdims=True), dtype=torch.float32)
        self.preprocess = preprocess
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        """``key``: (epoch, index) as :class:`~photocritic.training.pixelcache.EpochLoader`
        asks, or an index (of epoch ``self.epoch``)."""
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        pixels = decode_cached(self.pixels, i, self.paths[i], self.preprocess)
        if pixels is None:
            return None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, i])
            pixels = np.array(AUGMENTATIONS[self.augment](pixels, rng))  # a writable copy
        return torch.from_numpy(pixels), self.q[i], i


def collate(items):
    items = [it for it in items if it is not None]
    if not items:
        return None
    return (torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items]),
            torch.tensor([it[2] for it in items]))


class FinetuneNet(nn.Module):
    def __init__(self, tower: nn.Module, head: nn.Module):
        super().__init__()
        self.tower = tower
        self.head = head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(pixels))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # batch norm keeps its running statistics
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


class _Shard(torch.utils.data.Sampler):
    """This process's part of each global batch, micro-batched: yields lists
    of indices. With N processes, an epoch's last batch of fewer than N
    images is left out of that epoch (the order changes every epoch).
    ``keep_empty``: keep a process's empty micro-batches in ``plan``, so that
    every process runs ``accumulate`` of them per step (for losses that
    gather across processes in every micro-batch)."""

    def __init__(self, order: torch.Tensor, global_batch: int, rank: int, world: int, accumulate: int,
                 keep_empty: bool = False):
        self.plan = []
        for s in range(0, len(order), global_batch):
            batch = order[s:s + global_batch]
            if len(batch) < world:  # a last batch too small to give every process an image:
                break               # skipped (a process without one would stall the others)
            mine = batch.tensor_split(world)[rank]
            self.plan.append((len(batch), [m.tolist() for m in mine.tensor_split(accumulate)
                                           if keep_empty or len(m)]))

    def __iter__(self):
        for _, micro in self.plan:
            yield from micro

    def __len__(self) -> int:
        return sum(len(m) for _, m in self.plan)


def loader_workers(workers: int | None) -> int:
    """Decoding workers of a training DataLoader: ``workers``, else half the
    cores, at most 4 (none on one core)."""
    return workers if workers is not None else min(4, max(0, (os.cpu_count() or 2) // 2))


def atomic_save(obj, path: Path) -> None:
    """torch.save to ``path`` through a temporary file: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _state_rng() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def finetune_run(cfg, spec, method, train_set, val_set, output: Path, notes: list, log):
    from accelerate import Accelerator

    from ..device import resolve_precision
    from ..models import Critic, build_encoder
    from ..scoremap import ScoreMap
    from .run import TrainResult, prepare_output, present_images, write_reports

    if method.augment is not None and method.augment not in AUGMENTATIONS:
        from ..errors import UsageError

        raise UsageError(f"unknown augmentation {method.augment!r} (known: {', '.join(AUGMENTATIONS)})")
    precision = resolve_precision(cfg["precision"], cfg["device"])
    acc = Accelerator(cpu=cfg["device"] == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    main = acc.is_main_process
    say = log if main else (lambda m: None)
    torch.manual_seed(method.seed)
    encoder = build_encoder(spec, "cpu")
    tower = encoder.tower()
    tower.float()
    if train_set.distribution is None:
        raise DataError("finetune learns score distributions (EMD); the labels have only mean scores")
    tr_paths, tr_idx = present_images(train_set)
    va_paths, va_idx = present_images(val_set)
    if len(tr_paths) < method.min_train or len(va_paths) < 2:
        raise DataError(f"too few labelled images for finetune: {len(tr_paths)} on disk for training "
                        f"(needs {method.min_train}), {len(va_paths)} for validation (needs 2)")
    if acc.is_main_process:  # the data checks passed: only now is --overwrite carried out
        prepare_output(output, cfg["overwrite"], cfg["resume"], clear=True)
    acc.wait_for_everyone()
    head = method.build({"dim": tower.dim})
    method._meta = {"dim": tower.dim}
    net = FinetuneNet(tower, head)
    opt = torch.optim.SGD([{"params": [p for p in tower.parameters() if p.requires_grad], "lr": method.lr_backbone},
                           {"params": head.parameters(), "lr": method.lr}], momentum=method.momentum)
    start_epoch, best, best_epoch, waited, rows = 1, math.inf, 0, 0, []
    ck = output / CHECKPOINT
    if cfg["resume"]:
        if not (ck / "state.pt").exists():
            raise DataError(f"--resume: {output} has no checkpoint to resume from")
        state = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        start_epoch, best, best_epoch, waited, rows = (state["epoch"] + 1, state["best"], state["best_epoch"],
                                                       state["waited"], state["rows"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        say(f"resuming after epoch {state['epoch']}")
    net, opt = acc.prepare(net, opt)
    pre = encoder.preprocess
    q_train = train_set.distribution[tr_idx]
    caches = make_caches(pre, [len(tr_paths), len(va_paths)], method.image_cache_mb / acc.num_processes)
    report_caches(say, caches, [len(tr_paths), len(va_paths)], method.image_cache_mb)
    data = ImageRatings(tr_paths, q_train, pre, augment=method.augment, seed=method.seed, pixels=caches[0])
    vdata = ImageRatings(va_paths, val_set.distribution[va_idx], pre, pixels=caches[1])
    loader = EpochLoader(data, collate, loader_workers(method.workers),
                         in_process_when_cached=acc.device.type == "cpu")
    world, rank = acc.num_processes, acc.process_index
    max_epochs = cfg["epochs"] or method.epochs or 10 ** 9
    t0 = time.perf_counter()
    steps = 0
    epoch = start_epoch - 1
    for epoch in range(start_epoch, max_epochs + 1):
        if waited >= method.patience:
            break
        shard = _Shard(epoch_order(len(data), method.seed, epoch), method.batch_size, rank, world,
                       method.accumulate)
        net.train()
        total, seen = 0.0, 0
        t_epoch = time.perf_counter()
        it = loader.epoch(epoch, [m for _, micro in shard.plan for m in micro])
        for global_n, micro in shard.plan:
            opt.zero_grad()
            for k in range(len(micro)):
                batch = next(it)
                if batch is None:  # every image of this micro-batch unreadable
                    if world == 1:
                        continue
                    # the other processes all-reduce gradients on this step: join them with a blank
                    # image weighted 0 (no change to the sum; a skipped backward would hang them)
                    h, w = pre.output_size
                    pixels, q = torch.zeros(1, h, w, 3, dtype=torch.uint8), torch.full((1, 10), 0.1)
                    idx, weight = None, 0.0
                else:
                    pixels, q, idx = batch
                    weight = 1.0
                x = pre.normalize(pixels).to(acc.device)
                sync = k == len(micro) - 1
                ctx = acc.no_sync(net) if not sync and world > 1 else _null()
                with ctx, acc.autocast():
                    p = net(x)
                    per = emd(p.float(), q.to(acc.device), reduction="none")
                    loss = per.sum() / global_n * world * weight
                acc.backward(loss)
                if idx is not None:
                    total += float(per.sum().detach())
                    seen += len(per)
            opt.step()
            steps += 1
        train_loss = _global_mean(acc, total, seen)
        t_train = time.perf_counter() - t_epoch
        net.eval()
        pred = _predict(acc, net, vdata, pre, rank, world, method.batch_size)
        report = _metrics(pred, val_set, va_idx)
        report = {"epoch": epoch, "train_loss": train_loss, **report, "train_seconds": round(t_train, 3),
                  "val_seconds": round(time.perf_counter() - t_epoch - t_train, 3)}
        rows.append(report)
        say(f"epoch {epoch}: train EMD {train_loss:.4f}, val EMD {report['emd']:.4f}, "
            f"SRCC {report['srcc']:.3f}")
        if report["emd"] < best:
            best, best_epoch, waited = report["emd"], epoch, 0
            if main:
                _save_best(acc, net, ck)
        else:
            waited += 1
        if main and epoch % method.checkpoint_every == 0:
            atomic_save({"net": acc.unwrap_model(net).state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                         "best": best, "best_epoch": best_epoch, "waited": waited, "rows": rows,
                         "rng": _state_rng()}, ck / "state.pt")
        acc.wait_for_everyone()
    seconds = time.perf_counter() - t0
    cached = caches[0].slots
    for cache in caches:
        cache.close()
    acc.wait_for_everyone()
    if not main:
        return None
    final_net = acc.unwrap_model(net)
    if (ck / "best.pt").exists():
        final_net.load_state_dict(torch.load(ck / "best.pt", map_location="cpu", weights_only=True))
    final_net.float().eval()
    method.module = final_net.head
    model = Critic({k: v for k, v in spec.items() if k != "weights"}, method,
                   ScoreMap(center=0.0, scale=1.0, kind="linear"), name=cfg["name"] or output.name,
                   description=cfg["description"] or f"finetune of {cfg['backbone']} on {train_set.name} "
                                                     f"({len(tr_paths)} images)")
    model.save(output, half=bool(cfg["half"]), backbone_state=final_net.tower.backbone_state())
    metrics = {"method": method.name, "backbone": cfg["backbone"], "epochs": rows,
               "final_val": {k: v for k, v in (rows[best_epoch - 1] if best_epoch else {}).items()},
               "best_epoch": best_epoch, "processes": world, "precision": precision,
               "train_images": {"listed": len(train_set), "used": len(tr_paths), "cached": cached},
               "val_images": {"listed": len(val_set), "used": len(va_paths)},
               "seconds": round(seconds, 3), "steps": steps, "notes": notes}
    write_reports(output, cfg, metrics)
    say(f"trained finetune: best epoch {best_epoch}, val EMD {best:.4f} -> {output}")
    return TrainResult(output, metrics, cfg, notes)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _global_mean(acc, total: float, seen: int) -> float:
    t = torch.tensor([total, float(seen)], dtype=torch.float64, device=acc.device)
    t = acc.reduce(t, reduction="sum") if acc.num_processes > 1 else t
    return float(t[0] / max(t[1], 1))


@torch.no_grad()
def _predict(acc, net, vdata, pre, rank: int, world: int, batch: int) -> dict:
    """(index -> distribution) for every validation image, from all processes."""
    mine = list(range(rank, len(vdata), world))
    out_idx, out_p = [], []
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(vdata, mine), batch_size=batch,
                                         collate_fn=collate)
    for b in loader:
        if b is None:
            continue
        pixels, _, idx = b
        with acc.autocast():
            p = net(pre.normalize(pixels).to(acc.device)).float()
        out_idx.append(idx.to(acc.device))
        out_p.append(p)
    idx = torch.cat(out_idx) if out_idx else torch.zeros(0, dtype=torch.long, device=acc.device)
    p = torch.cat(out_p) if out_p else torch.zeros(0, 10, device=acc.device)
    if world > 1:
        idx = acc.gather(acc.pad_across_processes(idx, pad_index=-1))
        p = acc.gather(acc.pad_across_processes(p))
    keep = idx >= 0
    return dict(zip(idx[keep].tolist(), p[keep].cpu().numpy()))


def _metrics(pred: dict, val_set, va_idx) -> dict:
    from ..methods.nima import mean_score
    from .run import prediction_metrics

    order = sorted(pred)
    p = np.stack([pred[k] for k in order])
    rows = va_idx[order]
    targets = Targets(val_set.mean[rows], val_set.distribution[rows])
    return prediction_metrics(mean_score(torch.from_numpy(p)).numpy(), targets, p)


def _save_best(acc, net, ck: Path) -> None:
    atomic_save(acc.unwrap_model(net).state_dict(), ck / "best.pt")
