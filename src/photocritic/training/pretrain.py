"""``photocritic pretrain vila-p``: VILA-P's aesthetic pretraining of a CoCa
on image-comment pairs (Ke et al., CVPR 2023, Sec. 3.1).

Two stages, as in the paper: the CoCa starts from a general image-text
checkpoint (``--init``: a CLIP/SigLIP directory or hub id; the image tower,
the unimodal text layers, the embeddings and projections are copied, see
:func:`photocritic.encoders.coca.from_clip`), or from random weights
(``--init random:tiny``) with a byte-level BPE tokenizer trained on the
comments; then it is trained on the image-comment pairs with
alpha * contrastive + beta * captioning (alpha = 1, beta = 2).

Data: every image of ``--captions`` (any comments format ``data`` reads)
found in ``--images`` is one training example per epoch, paired with one of
its comments drawn by (seed, epoch, image). Unreadable images are dropped
from their batch and counted; a seeded ``val_fraction`` of the images, by
id, is held out and scored every epoch (contrastive and captioning loss);
the best epoch is kept.

Accelerate runs it unchanged on one CPU, one GPU or several processes
(``torchrun --nproc_per_node N -m photocritic pretrain ...``). Each process
takes its share of every global batch; the contrastive loss uses the
embeddings of the whole global batch (gathered with their gradients), and
each process's loss is its share of the global loss times the number of
processes, so DDP's averaged gradient is the one-process gradient: with
``accumulate`` = 1, two processes train the same weights as one. With
``accumulate`` > 1 a global batch runs as that many micro-batches and the
contrastive negatives are those of the micro-batch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..losses import caption_loss, coca_loss, contrastive_loss
from .pixelcache import EpochLoader, decode_cached, make_caches, report_caches

COCA_DIR = "coca"
CHECKPOINT = "checkpoint"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class PretrainConfig:
    init: str
    captions: str
    images: str
    output: str
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    lr_image: float | None = None      # the image tower's rate (default lr / 10)
    lr_temperature: float = 0.01       # the rate of the log logit scale (one scalar)
    weight_decay: float = 0.01
    warmup_steps: int = 100            # linear warm-up of both rates from 0, then constant
    alpha: float = 1.0
    beta: float = 2.0
    same_text_positives: bool = False  # equal comment texts are positives of one another
    gen_queries: int | None = None     # default: 196 (VILA); 16 for random:tiny
    image_size: int | None = None      # a random init's input side (default: its size's; a multiple of 16)
    max_length: int = 64
    vocab_size: int = 4096             # the tokenizer trained for a random init
    tokenizer_corpus: str | None = None  # more texts (a comments file) for that tokenizer
    val_fraction: float = 0.05
    accumulate: int = 1
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    workers: int | None = None
    image_cache_mb: float = 2048.0     # decoded training images kept for later epochs (0: decode every epoch)
    resume: bool = False
    overwrite: bool = False
    prompts: str = "vila"
    name: str | None = None
    quiet: bool = False


class ImageComments(torch.utils.data.Dataset):
    """(uint8 HWC pixels, comment, index) per image, the comment drawn by
    (seed, epoch, image); an unreadable image gives None. ``pixels``: a
    :class:`~photocritic.training.pixelcache.PixelCache` of the decoded
    images, shared by the loader's workers (each image decoded once per run)."""

    def __init__(self, paths, comments, preprocess, tokenizer, config, seed: int = 0, pixels=None):
        self.paths, self.comments = paths, comments
        self.preprocess, self.tokenizer, self.config = preprocess, tokenizer, config
        self.seed = seed
        self.pixels = pixels

    def __len__(self):
        return len(self.paths)

    def text(self, i: int, epoch: int = 0) -> str:
        options = self.comments[i]
        return options[int(np.random.default_rng([self.seed, epoch, i]).integers(len(options)))]

    def __getitem__(self, key):
        """``key``: (epoch, index) as :class:`~photocritic.training.pixelcache.EpochLoader`
        asks, or an index (epoch 0: validation)."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        pixels = decode_cached(self.pixels, i, self.paths[i], self.preprocess)
        if pixels is None:
            return None
        return torch.from_numpy(pixels), self.text(i, epoch), i


def collate_pairs(tokenizer, config):
    from ..encoders.coca import tokenize

    def collate(items):
        items = [it for it in items if it is not None]
        if not items:
            return None
        ids, mask = tokenize(tokenizer, [it[1] for it in items], config)
        return torch.stack([it[0] for it in items]), ids, mask, torch.tensor([it[2] for it in items])
    return collate


class _GatherWithGrad(torch.autograd.Function):
    """All-gather equal-shaped tensors; the backward pass sums every
    process's gradient of the gathered tensor and returns this process's slice."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist

        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    if len(x) == n:
        return x
    return torch.cat([x, x.new_zeros((n - len(x),) + tuple(x.shape[1:]))])


def pair_losses(out: dict, world: int, device) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """This process's shares of the global contrastive and captioning losses
    (their sums over the processes are the global batch's losses), this
    process's caption-token loss sum and token count (for reporting).
    ``out['valid']`` marks real pairs (a process with no readable image
    joins with a blank one)."""
    img, txt, valid = out["image"], out["text"], out["valid"]
    keys = out.get("text_ids")
    tok_sum = caption_loss(out["logits"][valid], out["labels"][valid], reduction="sum")
    n_tok = int((out["labels"][valid] != -100).sum())
    if world == 1:
        con = contrastive_loss(img[valid], txt[valid], out["logit_scale"],
                               text_ids=None if keys is None else keys[valid])
        cap = tok_sum / max(n_tok, 1)
        return con, cap, float(tok_sum.detach()), n_tok
    import torch.distributed as dist

    width, g_valid, rows = shard_layout(valid, world, device)
    g_keys = None if keys is None else torch.cat(_gather_plain(_pad_rows(keys, width), world))
    con = contrastive_loss(gather_rows(img, width), gather_rows(txt, width), out["logit_scale"], valid=g_valid,
                           rows=rows, text_ids=g_keys)
    total_tok = torch.tensor([float(n_tok)], device=device)
    dist.all_reduce(total_tok)
    cap = tok_sum / total_tok.clamp(min=1)[0]
    return con, cap, float(tok_sum.detach()), n_tok


def shard_layout(valid: torch.Tensor, world: int, device) -> tuple[int, torch.Tensor, slice]:
    """How a batch split over processes is gathered: every process's rows
    padded to the widest share (``width``) and concatenated in rank order;
    the global mask of real rows (``valid`` is this process's), and this
    process's slice of the gathered rows."""
    import torch.distributed as dist

    width = int(max(n.item() for n in _gather_plain(torch.tensor([len(valid)], device=device), world)))
    g_valid = torch.cat(_gather_plain(_pad_rows(valid.to(torch.long), width), world)).bool()
    rank = dist.get_rank()
    return width, g_valid, slice(rank * width, (rank + 1) * width)


def gather_rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """Every process's rows of ``x`` (float, padded to ``width``), gathered
    with their gradients (:class:`_GatherWithGrad`)."""
    return _GatherWithGrad.apply(_pad_rows(x.float(), width))


def _gather_plain(x, world):
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return parts


def images_by_id(images: Path) -> dict[str, str]:
    """``{id: path}`` of the image files in ``images`` (``<id>.<image extension>``; the first of equal stems)."""
    files = {}
    for f in sorted(images.iterdir()):
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            files.setdefault(f.stem, str(f))
    return files


def find_pairs(comments: dict, images: Path) -> tuple[list[str], list[str], list[list[str]], dict]:
    """(ids, paths, comment lists) of the commented images found in
    ``images`` (``<id>.<image extension>``), and counts of what was left out."""
    files = images_by_id(images)
    ids, paths, texts = [], [], []
    empty = missing = 0
    for key in sorted(comments):
        clean = [" ".join(str(c).split()) for c in comments[key]]
        clean = [c for c in clean if c]
        if not clean:
            empty += 1
            continue
        if key not in files:
            missing += 1
            continue
        ids.append(key)
        paths.append(files[key])
        texts.append(clean)
    return ids, paths, texts, {"commented_images": len(comments), "without_image": missing,
                               "without_comments": empty, "pairs": sum(len(t) for t in texts)}


def build_initial(cfg: PretrainConfig, corpus: list[str]):
    """(CoCa, tokenizer) for ``--init``: a CLIP/SigLIP checkpoint, a CoCa
    (a VILA-P model directory, e.g. one pretrained on general captions), or
    ``random:SIZE`` with a tokenizer trained on ``corpus`` (and on the texts
    of ``tokenizer_corpus``)."""
    from ..encoders import coca as C
    from ..zoo import _coca_of

    if cfg.image_size is not None and not cfg.init.startswith("random:"):
        raise UsageError(f"--image-size sets the input of a random init; --init {cfg.init} brings its own")
    if cfg.init.startswith("random:"):
        if cfg.tokenizer_corpus:
            from ..data.comments import load_comments_option

            corpus = corpus + [t for group in load_comments_option(cfg.tokenizer_corpus).values() for t in group]
        tok = C.train_tokenizer(corpus, vocab_size=cfg.vocab_size)
        ids = tuple(tok.convert_tokens_to_ids(t) for t in ("<bos>", "<eos>", "<pad>"))
        config = C.random_config(cfg.init.split(":", 1)[1], len(tok), ids,
                                 gen_queries=cfg.gen_queries or 16, max_length=cfg.max_length,
                                 image_size=cfg.image_size)
        torch.manual_seed(cfg.seed)
        return C.CoCa(config), tok
    from ..zoo import BACKBONES

    path = Path(cfg.init).expanduser()
    coca = _coca_of(path) if path.is_dir() else None
    if coca is not None:  # continue from a CoCa: every weight and its tokenizer
        if cfg.tokenizer_corpus:
            raise UsageError("--tokenizer-corpus trains the tokenizer of a random init; --init "
                             f"{cfg.init} brings its own")
        return C.load_coca(coca)
    name = BACKBONES[cfg.init]["name"] if cfg.init in BACKBONES and BACKBONES[cfg.init]["type"] == "hf" else cfg.init
    torch.manual_seed(cfg.seed)
    return C.from_clip(name, gen_queries=cfg.gen_queries or 196, max_length=cfg.max_length)


def _forward(model, pixels, ids, mask, pre, device, valid, same_text: bool = False):
    out = model(pre.normalize(pixels).to(device), ids.to(device), mask.to(device))
    out["valid"] = valid.to(device)
    if same_text:
        out["text_ids"] = text_keys(ids, mask).to(device)
    return out


def text_keys(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One int64 per row, equal for rows with the same tokens (a hash of the
    token tuple: Python hashes tuples of ints the same in every process)."""
    return torch.tensor([hash(tuple(r[:int(m.sum())])) for r, m in zip(ids.tolist(), mask)], dtype=torch.long)


def blank_batch(pre, config):
    """One blank image with a two-token text, marked invalid: how a process
    with no readable image in a micro-batch still joins the collectives."""
    h, w = pre.output_size
    ids = torch.tensor([[config.bos_id, config.eos_id]])
    return (torch.zeros(1, h, w, 3, dtype=torch.uint8), ids, torch.ones_like(ids),
            torch.zeros(1, dtype=torch.bool))


@torch.no_grad()
def validation_losses(model, data, pre, device, batch_size: int, alpha: float, beta: float,
                      same_text: bool = False) -> dict:
    """Contrastive loss (over batches of ``batch_size``) and captioning loss
    per token on the held-out pairs; every process computes the same."""
    model.eval()
    collate = collate_pairs(data.tokenizer, data.config)
    con_sum, n_con, tok_sum, n_tok = 0.0, 0, 0.0, 0
    for s in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(s, min(s + batch_size, len(data)))])
        if batch is None or len(batch[3]) < 2:
            continue
        pixels, ids, mask, idx = batch
        out = _forward(model, pixels, ids, mask, pre, device, torch.ones(len(idx), dtype=torch.bool), same_text)
        con_sum += float(contrastive_loss(out["image"], out["text"], out["logit_scale"],
                                          text_ids=out.get("text_ids"))) * len(idx)
        n_con += len(idx)
        tok_sum += float(caption_loss(out["logits"], out["labels"], reduction="sum"))
        n_tok += int((out["labels"] != -100).sum())
    con = con_sum / max(n_con, 1)
    cap = tok_sum / max(n_tok, 1)
    return {"val_contrastive": con, "val_captioning": cap, "val_loss": alpha * con + beta * cap}


def pretrain(cfg: PretrainConfig, log=None):
    """Run VILA-P pretraining; returns the output directory (on the main process)."""
    from accelerate import Accelerator

    from ..data.comments import load_comments_option
    from ..device import resolve_precision
    from ..encoders import coca as C
    from .run import prepare_output, val_ids
    from .trainer import _null, _Shard, epoch_order, loader_workers

    log = log or (lambda m: None)
    output = Path(cfg.output)
    images = Path(cfg.images).expanduser()
    if not images.is_dir():
        raise UsageError(f"--images {images}: no such folder")
    prepare_output(output, cfg.overwrite, cfg.resume, clear=False)
    comments = load_comments_option(cfg.captions)
    ids, paths, texts, counts = find_pairs(comments, images)
    if len(ids) < 4:
        raise DataError(f"{cfg.captions}: only {len(ids)} commented images found in {images} "
                        f"(pretraining needs at least 4; {counts['without_image']} commented ids have no "
                        f"image there, {counts['without_comments']} have only empty comments)")
    held = set(val_ids(ids, cfg.val_fraction, cfg.seed)) if cfg.val_fraction > 0 else set()
    tr = [k for k, i in enumerate(ids) if i not in held]
    va = [k for k, i in enumerate(ids) if i in held]
    precision = resolve_precision(cfg.precision, cfg.device)
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    main = acc.is_main_process
    say = log if main else (lambda m: None)
    world, rank = acc.num_processes, acc.process_index
    ck = output / CHECKPOINT
    if cfg.resume and not (ck / "state.pt").exists():
        raise DataError(f"--resume: {output} has no checkpoint to resume from")
    if main:
        # the starting point (and the tokenizer), which every process loads; built before --overwrite
        # empties anything, so a bad --init leaves the output as it was
        initial = None if cfg.resume else build_initial(cfg, [t for group in texts for t in group])
        prepare_output(output, cfg.overwrite, cfg.resume, clear=True)
        if initial is not None:
            C.save_coca(*initial, ck / "init")
    acc.wait_for_everyone()
    model, tok = C.load_coca(ck / "init")
    model.float()
    say(f"pretraining on {len(tr)} images ({sum(len(texts[k]) for k in tr)} comments), validating on "
        f"{len(va)}; {counts['without_image']} commented ids without an image")
    pre = C.preprocess_of(model.config)
    image_params = list(model.vision.parameters())
    taken = {id(p) for p in image_params} | {id(model.logit_scale)}
    other = [p for p in model.parameters() if id(p) not in taken]
    opt = torch.optim.AdamW([{"params": image_params, "lr": cfg.lr_image if cfg.lr_image is not None else cfg.lr / 10},
                             {"params": other, "lr": cfg.lr},
                             {"params": [model.logit_scale], "lr": cfg.lr_temperature, "weight_decay": 0.0}],
                            weight_decay=cfg.weight_decay)
    warmup = max(0, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
    start_epoch, best, best_epoch, rows = 1, math.inf, 0, []
    if cfg.resume:
        state = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, best, best_epoch, rows = state["epoch"] + 1, state["best"], state["best_epoch"], state["rows"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        say(f"resuming after epoch {state['epoch']}")
    net, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(net)
    caches = make_caches(pre, [len(tr), len(va)], cfg.image_cache_mb / world)
    report_caches(say, caches, [len(tr), len(va)], cfg.image_cache_mb)
    data = ImageComments([paths[k] for k in tr], [texts[k] for k in tr], pre, tok, model.config, cfg.seed,
                         pixels=caches[0])
    vdata = ImageComments([paths[k] for k in va], [texts[k] for k in va], pre, tok, model.config, cfg.seed,
                          pixels=caches[1])
    collate = collate_pairs(tok, model.config)
    pairs = EpochLoader(data, collate, loader_workers(cfg.workers), in_process_when_cached=acc.device.type == "cpu")
    t0 = time.perf_counter()
    steps, unreadable = 0, 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        plan = [micro for _, micro in _Shard(epoch_order(len(data), cfg.seed, epoch), cfg.batch_size, rank, world,
                                             cfg.accumulate, keep_empty=True).plan]
        it = pairs.epoch(epoch, [m for step in plan for m in step if m])
        net.train()
        sums = {"contrastive": 0.0, "tok": 0.0, "n_tok": 0, "micro": 0}
        t_epoch = time.perf_counter()
        for step in plan:
            opt.zero_grad()
            for k, micro in enumerate(step):
                batch = next(it) if micro else None
                if batch is None:
                    unreadable += len(micro)
                    if world == 1:
                        continue
                    pixels, ids_, mask, valid = blank_batch(pre, model.config)
                else:
                    pixels, ids_, mask, idx = batch
                    unreadable += len(micro) - len(idx)
                    valid = torch.ones(len(idx), dtype=torch.bool)
                sync = k == len(step) - 1
                ctx = acc.no_sync(net) if not sync and world > 1 else _null()
                with ctx, acc.autocast():
                    out = _forward(net, pixels, ids_, mask, pre, acc.device, valid, cfg.same_text_positives)
                    con, cap, tok_sum, n_tok = pair_losses(out, world, acc.device)
                    loss = coca_loss(con, cap, cfg.alpha, cfg.beta) * world / len(step)
                acc.backward(loss)
                sums["contrastive"] += float(con.detach())  # this process's share of the micro-batch's
                sums["tok"] += tok_sum
                sums["n_tok"] += n_tok
                sums["micro"] += 1
            opt.step()
            sched.step()
            with torch.no_grad():  # CLIP's cap on the logit scale (100)
                core.logit_scale.clamp_(max=math.log(100.0))
            steps += 1
        t_train = time.perf_counter() - t_epoch
        totals = _reduce(acc, [sums["contrastive"], sums["tok"], sums["n_tok"]])
        row = {"epoch": epoch, "train_contrastive": totals[0] / max(sums["micro"], 1),
               "train_captioning": totals[1] / max(totals[2], 1)}
        row["train_loss"] = cfg.alpha * row["train_contrastive"] + cfg.beta * row["train_captioning"]
        if len(vdata) >= 2:
            row.update(validation_losses(core, vdata, pre, acc.device, cfg.batch_size, cfg.alpha, cfg.beta,
                                         cfg.same_text_positives))
        row.update(train_seconds=round(t_train, 3), logit_scale=float(core.logit_scale.exp()))
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f}"
            + (f", val contrastive {row['val_contrastive']:.4f}, val captioning {row['val_captioning']:.4f}"
               if "val_loss" in row else ""))
        best, best_epoch = close_epoch(acc, core, opt, sched, ck, rows, row, best, best_epoch)
    seconds = time.perf_counter() - t0
    cached = caches[0].slots
    for cache in caches:
        cache.close()
    acc.wait_for_everyone()
    if not main:
        return None
    best_weights(core, ck)
    write_vilap_dir(output, core, tok, cfg)
    n_ref = save_reference_images(output / COCA_DIR, data, cfg.seed)
    metrics = {"method": "vila-p", "reference_images": n_ref, "init": cfg.init, "epochs": rows, "best_epoch": best_epoch,
               "processes": world, "precision": precision, "images": {"train": len(tr), "val": len(va)},
               "unreadable_images": unreadable, "cached_images": cached, "data": counts, "steps": steps, "seconds": round(seconds, 3),
               "params": {k: v for k, v in vars(cfg).items() if k not in ("quiet",)}}
    from ..evaluation import json_safe

    (output / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
    _plot(rows, output / "training.png")
    say(f"pretrained VILA-P: best epoch {best_epoch} -> {output}")
    return output


def close_epoch(acc, core, opt, sched, ck: Path, rows: list, row: dict, best: float, best_epoch: int,
                **extra) -> tuple[float, int]:
    """End an epoch: append its row, keep the weights of the best epoch so
    far (by validation loss, else training loss) in ``best.pt`` and
    everything ``--resume`` needs in ``state.pt`` (the main process writes),
    then wait for every process. Returns the new (best, best epoch)."""
    from .trainer import _state_rng, atomic_save

    rows.append(row)
    watched = row.get("val_loss", row["train_loss"])
    if watched < best:
        best, best_epoch = watched, row["epoch"]
        if acc.is_main_process:
            atomic_save(core.state_dict(), ck / "best.pt")
    if acc.is_main_process:
        atomic_save({"model": core.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                     "epoch": row["epoch"], "best": best, "best_epoch": best_epoch, "rows": rows,
                     "rng": _state_rng(), **extra}, ck / "state.pt")
    acc.wait_for_everyone()
    return best, best_epoch


def best_weights(core, ck: Path) -> None:
    """Load the best epoch's weights (where one was kept) into ``core``, in fp32, for inference."""
    if (ck / "best.pt").exists():
        core.load_state_dict(torch.load(ck / "best.pt", map_location="cpu", weights_only=True))
    core.float().eval()


def _reduce(acc, values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        t = acc.reduce(t, reduction="sum")
    return t.tolist()


#: training images saved with a VILA-P model: the reference set of mutual-information decoding
REFERENCE_IMAGES = 32


def save_reference_images(coca_dir: Path, data: "ImageComments", seed: int, n: int = REFERENCE_IMAGES) -> int:
    """Save up to ``n`` readable training images (a seeded draw, as the model
    preprocesses them) with the CoCa: the images over which
    ``photocritic critique --pmi`` averages p(critique). Returns how many."""
    from ..encoders.coca import save_reference

    order = np.random.default_rng([seed, 7]).permutation(len(data))
    pixels = []
    for i in order:
        item = data[int(i)]
        if item is not None:
            pixels.append(item[0])
        if len(pixels) == n:
            break
    if pixels:
        save_reference(coca_dir, torch.stack(pixels))
    return len(pixels)


def write_vilap_dir(output: Path, model, tokenizer, cfg: PretrainConfig) -> Path:
    """The model directory: ``coca/`` (the CoCa) and a ``config.json`` that
    makes the directory a zero-shot scorer with ``cfg.prompts`` (any prompt
    set can be given at load time), a ``--backbone`` and a captioner."""
    from ..encoders.coca import save_coca
    from ..methods.zeroshot import PromptSet
    from ..models import Critic
    from ..zoo import default_score_map

    save_coca(model, tokenizer, output / COCA_DIR)
    ps = PromptSet.load(cfg.prompts)
    critic = Critic({"type": "coca", "name": COCA_DIR}, None, default_score_map(ps),
                    name=cfg.name or output.name,
                    description=f"VILA-P (CoCa) pretrained on {Path(cfg.captions).name} from {cfg.init}; "
                                f"zero-shot with prompt set {ps.name}", prompts=ps)
    critic.save(output)
    return output


def _plot(rows: list[dict], path: Path, parts=("contrastive", "captioning"), title: str = "VILA-P") -> None:
    """Train (and validation) loss per epoch of each loss part, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, len(parts), figsize=(4.5 * len(parts), 3.2))
    ep = [r["epoch"] for r in rows]
    marker = "o" if len(rows) < 3 else None
    for k, part in enumerate(parts):
        ax[k].plot(ep, [r[f"train_{part}"] for r in rows], marker=marker, label="train")
        if all(f"val_{part}" in r for r in rows):
            ax[k].plot(ep, [r[f"val_{part}"] for r in rows], marker=marker, label="val")
        ax[k].set(xlabel="epoch", ylabel=f"{part} loss", title=f"{title} {part}")
        ax[k].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
