"""``photocritic pretrain multiattr``: multi-attribute contrastive
pretraining (after Huang et al., TPAMI 2024; the model and losses are in
:mod:`photocritic.methods.multiattr` and :mod:`photocritic.losses`).

With ``tower="frozen"`` (the default) the image tower is not trained: its
``image.pooled`` (and, with token fusion, ``image.tokens``) features go once
through the scoring pipeline into the feature store, so a second run decodes
no image and each epoch costs only the adapters, fusion and projection
heads. With ``tower="trainable"`` the tower is trained too (at
``lr_tower``), on decoded images every step, its ``image.prelogits`` output
being p; the features of the initial tower, extracted once, are the semantic
affinity loss's frozen reference. The attribute descriptions go
once through the frozen sentence encoder (``--text-encoder``); an
(image, attribute) with several descriptions is paired with one drawn by
(seed, epoch, image, attribute) each epoch.

A seeded ``val_fraction`` of the images (by id) is held out; the best epoch
by validation loss is kept. Checkpoints after every epoch; ``--resume``
continues bit for bit. Accelerate runs it on one CPU, one GPU or several
processes (``torchrun --nproc_per_node N -m photocritic pretrain
multiattr ...``): each process takes its share of every global batch, the
embeddings of the global batch are gathered with their gradients, and each
process's loss is its share of the global loss times the number of
processes, so two processes train the weights one does.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..losses import AFFINITY_FORMS, affinity_loss, attribute_contrastive_loss, space_affinity_loss
from ..methods.multiattr import SINGLE, MultiAttrNet, attribute_query_text, default_prompts

MULTIATTR_DIR = "multiattr"
CHECKPOINT = "checkpoint"


@dataclass
class MultiAttrConfig:
    init: str
    attributes: str
    images: str
    output: str
    text_encoder: str = "minilm"
    tower: str = "frozen"            # "frozen" (adapters on its features) or "trainable"
    lr_tower: float | None = None    # the trained tower's rate (default lr / 100)
    spaces: str = "multi"            # "multi": a space per attribute; "single": one space (the ablation)
    affinity: float = 10.0           # weight of the semantic affinity loss (0: off)
    affinity_on: str = "spaces"      # what it keeps near the initial tower's: "spaces" (the attribute
                                     # embeddings, averaged over spaces) or "features" (f)
    affinity_form: str = "gram"      # "gram" (every pair's cosine) or "neighbours" (each image's near ones)
    affinity_temperature: float = 0.05  # the neighbours form's softmax temperature
    fusion: str = "auto"             # "tokens" (attention over the tower's tokens), "pooled", "auto"
    space_dim: int = 64
    adapter_dim: int = 128
    hidden: int = 256
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    workers: int | None = None
    image_cache_mb: float = 2048.0   # a trainable tower's decoded images kept for later epochs (0: none)
    extract_batch_size: int = 32
    cache: str | None = None
    no_cache: bool = False
    resume: bool = False
    overwrite: bool = False
    name: str | None = None
    quiet: bool = False


def find_described(descriptions: dict, images: Path) -> tuple[list[str], list[str], dict]:
    """(ids, paths) of the described images found in ``images`` and counts of what was left out."""
    from .pretrain import images_by_id

    files = images_by_id(images)
    ids = [k for k in sorted(descriptions) if descriptions[k] and k in files]
    return ids, [files[k] for k in ids], {"described_images": len(descriptions),
                                          "without_image": sum(1 for k in descriptions if k not in files),
                                          "without_descriptions": sum(1 for k in descriptions if not descriptions[k])}


class DescriptionTable:
    """Each image's descriptions per space as indices into one list of
    unique texts, whose sentence embeddings are computed once."""

    def __init__(self, descriptions: dict, ids: list[str], names: list[str], single: bool):
        self.spaces = [SINGLE] if single else list(names)
        texts: dict[str, int] = {}
        self.options: list[list[list[int]]] = []  # [image][space] -> text indices (empty: missing)
        for i in ids:
            entry = descriptions[i]
            if single:  # every description of the image, joined (the first of each attribute)
                parts = [f"{a.replace('_', ' ')}: {entry[a][0]}" for a in names if entry.get(a)]
                per = [["; ".join(parts)]] if parts else [[]]
            else:
                per = [entry.get(a, []) for a in names]
            self.options.append([[texts.setdefault(t, len(texts)) for t in group] for group in per])
        self.texts = list(texts)

    def draw(self, rows, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(text index (n, K), present mask (n, K)) for image rows, one
        description per (image, space) drawn by (seed, epoch, image, space)."""
        k = len(self.spaces)
        idx = np.zeros((len(rows), k), np.int64)
        mask = np.zeros((len(rows), k), bool)
        for r, i in enumerate(rows):
            for s, group in enumerate(self.options[i]):
                if group:
                    pick = 0 if len(group) == 1 else int(np.random.default_rng([seed, epoch, i, s]).integers(len(group)))
                    idx[r, s], mask[r, s] = group[pick], True
        return idx, mask


def tower_features(cfg: MultiAttrConfig, spec: dict, paths: list[str], use_tokens: bool, session,
                   view: str = "image.pooled"):
    """(pooled (N, C), tokens (N, T, Ct) or None, rows kept, failure counts)
    of the tower through the scoring pipeline and the feature store of
    ``session`` (a :func:`~photocritic.features.token_session`'s (token
    store, path)); unreadable images are left out and counted."""
    store, path = session
    from ..features import EmbeddingCache, gather
    from ..models import Critic
    from ..scoremap import ScoreMap

    critic = Critic(spec, None, ScoreMap()).configure(device=cfg.device, precision=cfg.precision)
    kw = dict(batch_size=cfg.extract_batch_size, progress=not cfg.quiet, workers=cfg.workers)
    pooled_critic = critic.with_view(view)
    cache = EmbeddingCache(path)
    try:
        rows = pooled_critic.score(paths, cache=cache, **kw)
        ok = [k for k, r in enumerate(rows) if r.status == "ok"]
        pooled = gather(cache, pooled_critic.encoder_key(), [rows[k].content_hash for k in ok], None)
    finally:
        cache.close()
    failed = {}
    for r in rows:
        if r.status != "ok":
            failed[r.status] = failed.get(r.status, 0) + 1
    tokens = None
    if use_tokens:
        tok_critic = critic.with_view("image.tokens")
        trow = tok_critic.score([paths[k] for k in ok], cache=store, **kw)
        got = store.get_many(list(dict.fromkeys(r.content_hash for r in trow)), tok_critic.encoder_key())
        tokens = np.stack([np.asarray(got[r.content_hash], np.float32) for r in trow])
    return np.asarray(pooled, np.float32), tokens, ok, failed


class TowerNet(torch.nn.Module):
    """A trained tower (pixels -> p) followed by the net."""

    def __init__(self, tower, net: MultiAttrNet):
        super().__init__()
        self.tower, self.net = tower, net

    def forward(self, pixels, tokens, text):
        return self.net(self.tower(pixels), None, text)


def _net_of(model) -> MultiAttrNet:
    core = model.module if hasattr(model, "module") else model
    return core.net if isinstance(core, TowerNet) else core


def batch_losses(model, batch: dict, cfg: MultiAttrConfig, world: int, device) -> tuple:
    """This process's shares of the global contrastive and affinity losses."""
    from .pretrain import _gather_plain, _pad_rows, gather_rows, shard_layout

    f, e, y = model(batch["input"], batch.get("tokens"), batch["text"])
    net = _net_of(model)
    # the reference: the initial tower's features as the adapter standardises them (f's starting point)
    mask, ids, p = batch["mask"], batch["ids"], net.adapter.standardised(batch["initial"].float())
    scale = net.logit_scale.exp()
    kept = functools.partial(space_affinity_loss if cfg.affinity_on == "spaces" else affinity_loss,
                             form=cfg.affinity_form, temperature=cfg.affinity_temperature)
    if world == 1:
        con = attribute_contrastive_loss(e, y, mask, scale, ids)
        aff = kept(e if cfg.affinity_on == "spaces" else f, p) if cfg.affinity > 0 else f.new_zeros(())
        return con, aff
    width, valid, rows = shard_layout(torch.ones(len(f), dtype=torch.bool, device=device), world, device)
    g_mask = torch.cat(_gather_plain(_pad_rows(mask.long(), width), world)).bool() & valid[:, None]
    g_ids = torch.cat(_gather_plain(_pad_rows(ids, width), world))
    g_e = gather_rows(e, width)
    con = attribute_contrastive_loss(g_e, gather_rows(y, width), g_mask, scale, g_ids, rows=rows)
    aff = f.new_zeros(())
    if cfg.affinity > 0:
        g_p = torch.cat(_gather_plain(_pad_rows(p.float(), width), world))
        aff = kept(g_e if cfg.affinity_on == "spaces" else gather_rows(f, width), g_p, valid=valid, rows=rows)
    return con, aff


class _Data:
    """Everything a step reads, indexed by training row: the tower's
    features, or (a trained tower) the decoded images with the initial
    tower's features as the affinity reference."""

    def __init__(self, pooled, tokens, table: DescriptionTable, text_emb: np.ndarray, rows: list[int],
                 paths: list[str] | None = None, pre=None, pixels=None):
        self.pooled, self.tokens, self.table, self.text_emb, self.rows = pooled, tokens, table, text_emb, rows
        self.paths, self.pre, self.pixels = paths, pre, pixels  # pixels: a PixelCache by row

    def __len__(self):
        return len(self.rows)

    def _pixels(self, rows: list[int]) -> torch.Tensor:
        from .pixelcache import decode_cached

        out = []
        for r in rows:
            got = decode_cached(self.pixels, r, self.paths[r], self.pre)
            if got is None:  # it was read when its features were extracted
                raise DataError(f"{self.paths[r]} became unreadable during training")
            out.append(got)
        return self.pre.normalize(torch.from_numpy(np.stack(out)))

    def batch(self, local: list[int], seed: int, epoch: int, device) -> dict:
        rows = [self.rows[i] for i in local]
        idx, mask = self.table.draw(rows, seed, epoch)
        initial = torch.from_numpy(self.pooled[rows]).to(device)
        out = {"input": initial if self.paths is None else self._pixels(rows).to(device), "initial": initial,
               "text": torch.from_numpy(self.text_emb[idx]).to(device),
               "mask": torch.from_numpy(mask).to(device), "ids": torch.from_numpy(idx).to(device)}
        if self.tokens is not None:
            out["tokens"] = torch.from_numpy(self.tokens[rows]).to(device)
        return out


@torch.no_grad()
def validation_losses(net, data: _Data, cfg: MultiAttrConfig, device) -> dict:
    """Contrastive and affinity loss on the held-out images, in batches of
    ``batch_size`` (descriptions drawn as in epoch 0); every process computes the same."""
    net.eval()
    con = aff = 0.0
    n = 0
    for s in range(0, len(data), cfg.batch_size):
        local = list(range(s, min(s + cfg.batch_size, len(data))))
        if len(local) < 2:
            continue
        c, a = batch_losses(net, data.batch(local, cfg.seed, 0, device), cfg, 1, device)
        con += float(c) * len(local)
        aff += float(a) * len(local)
        n += len(local)
    con, aff = con / max(n, 1), aff / max(n, 1)
    return {"val_contrastive": con, "val_affinity": aff, "val_loss": con + cfg.affinity * aff}


def pretrain_multiattr(cfg: MultiAttrConfig, log=None):
    """Run the pretraining; returns the output directory (on the main process)."""
    from accelerate import Accelerator

    from ..data.attributes import attribute_names, load_attributes_option
    from ..device import resolve_precision
    from ..encoders.text import text_encoder
    from ..features import default_cache_path, token_session
    from ..zoo import backbone_spec, backbone_views
    from .pretrain import _plot, _reduce, best_weights, close_epoch
    from .run import prepare_output, val_ids
    from .trainer import _Shard, epoch_order

    log = log or (lambda m: None)
    if cfg.spaces not in ("multi", "single"):
        raise UsageError(f"--spaces {cfg.spaces}: use multi or single")
    if cfg.fusion not in ("auto", "tokens", "pooled"):
        raise UsageError(f"--fusion {cfg.fusion}: use tokens, pooled or auto")
    if cfg.affinity < 0:
        raise UsageError("--affinity is a loss weight: 0 or more")
    if cfg.affinity_on not in ("spaces", "features"):
        raise UsageError(f"--affinity-on must be spaces or features, not {cfg.affinity_on!r}")
    if cfg.affinity_form not in AFFINITY_FORMS:
        raise UsageError(f"--affinity-form must be {' or '.join(AFFINITY_FORMS)}, not {cfg.affinity_form!r}")
    if not cfg.affinity_temperature > 0:
        raise UsageError("--affinity-temperature must be above 0")
    if cfg.tower not in ("frozen", "trainable"):
        raise UsageError(f"--tower {cfg.tower}: use frozen or trainable")
    trainable = cfg.tower == "trainable"
    if trainable and cfg.fusion == "tokens":
        raise UsageError("--tower trainable fuses the attributes with the tower's pooled output; drop "
                         "--fusion tokens (or keep the tower frozen)")
    output = Path(cfg.output).expanduser()
    images = Path(cfg.images).expanduser()
    if not images.is_dir():
        raise UsageError(f"--images {images}: no such folder")
    prepare_output(output, cfg.overwrite, cfg.resume, clear=False)
    spec = backbone_spec(cfg.init)
    if spec["type"] == "multiattr":
        raise UsageError(f"--init {cfg.init} is a multi-attribute model already; start from its tower "
                         f"({spec.get('tower', {}).get('name', 'the backbone it was trained on')})")
    views = backbone_views(spec)
    use_tokens = not trainable and (cfg.fusion == "tokens" or (cfg.fusion == "auto" and "image.tokens" in views))
    if use_tokens and "image.tokens" not in views:
        raise UsageError(f"--fusion tokens: backbone {cfg.init} has no image.tokens view")
    descriptions = load_attributes_option(cfg.attributes)
    names = attribute_names(descriptions)
    ids, paths, counts = find_described(descriptions, images)
    if len(ids) < 4:
        raise DataError(f"{cfg.attributes}: only {len(ids)} described images found in {images} (pretraining "
                        f"needs at least 4; {counts['without_image']} described ids have no image there)")
    precision = resolve_precision(cfg.precision, cfg.device)
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    main = acc.is_main_process
    say = log if main else (lambda m: None)
    world, rank = acc.num_processes, acc.process_index
    if world > 1 and cfg.no_cache:
        raise UsageError("several processes share the tower's features through the feature store; drop --no-cache")
    ck = output / CHECKPOINT
    if cfg.resume and not (ck / "state.pt").exists():
        raise DataError(f"--resume: {output} has no checkpoint to resume from")
    store_path = None if cfg.no_cache else (cfg.cache or default_cache_path())
    with token_session(store_path) as session:
        with acc.main_process_first():  # the main process extracts, the others read the store
            pooled, tokens, ok, failed = tower_features(
                cfg if main else _quiet(cfg), spec, paths, use_tokens, session,
                view="image.prelogits" if trainable else "image.pooled")
    if len(ok) < 4:
        raise DataError(f"only {len(ok)} of the described images could be read ({failed})")
    unreadable = len(paths) - len(ok)
    ids = [ids[k] for k in ok]
    paths = [paths[k] for k in ok]
    table = DescriptionTable(descriptions, ids, names, cfg.spaces == "single")
    encoder = text_encoder(cfg.text_encoder, device=cfg.device)
    text_emb = encoder.encode_text(table.texts).float().cpu().numpy() if table.texts else None
    attr_feat = encoder.encode_text([attribute_query_text(s) for s in table.spaces]).float().cpu()
    held = set(val_ids(ids, cfg.val_fraction, cfg.seed)) if cfg.val_fraction > 0 else set()
    tr = [k for k, i in enumerate(ids) if i not in held]
    va = [k for k, i in enumerate(ids) if i in held]
    net_config = {"dim": int(pooled.shape[1]), "token_dim": int(tokens.shape[2]) if tokens is not None else None,
                  "text_dim": int(encoder.dim), "spaces": table.spaces,
                  "space_dim": cfg.space_dim * (len(names) if cfg.spaces == "single" else 1),
                  "adapter_dim": cfg.adapter_dim, "hidden": cfg.hidden}
    # what a checkpoint must share to be resumed: the network and the loss
    resume_key = {**net_config, "loss": {k: getattr(cfg, k) for k in ("affinity", "affinity_on", "affinity_form",
                                                                       "affinity_temperature")}}
    torch.manual_seed(cfg.seed)
    net = MultiAttrNet(net_config, attr_feat)
    net.adapter.standardise(pooled[tr] if tr else pooled)
    if tokens is not None:
        net.token_adapter.standardise(tokens[tr] if tr else tokens)
    model, pre = net, None
    if trainable:
        from ..models import build_encoder

        tower_encoder = build_encoder(spec, "cpu")
        tower = tower_encoder.tower().float()
        if tower.dim != net_config["dim"]:
            raise DataError(f"the tower's output ({tower.dim}) is not its prelogits view ({net_config['dim']})")
        model, pre = TowerNet(tower, net), tower_encoder.preprocess
    say(f"pretraining {cfg.spaces}-space on {len(tr)} images ({len(names)} attributes, {len(table.texts)} distinct "
        f"descriptions), validating on {len(va)}; {counts['without_image']} described ids without an image, "
        f"{unreadable} unreadable")
    groups = [{"params": list(net.parameters()), "lr": cfg.lr}]
    if trainable:
        groups.append({"params": [p for p in model.tower.parameters() if p.requires_grad],
                       "lr": cfg.lr_tower if cfg.lr_tower is not None else cfg.lr / 100})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(0, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
    start_epoch, best, best_epoch, rows = 1, math.inf, 0, []
    if main:
        prepare_output(output, cfg.overwrite, cfg.resume, clear=True)
    acc.wait_for_everyone()
    if cfg.resume:
        state = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
        if state["config"] != resume_key:
            raise DataError(f"--resume: {output}'s checkpoint was made with other options or data")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, best, best_epoch, rows = state["epoch"] + 1, state["best"], state["best_epoch"], state["rows"]
        torch.set_rng_state(state["rng"]["torch"])
        say(f"resuming after epoch {state['epoch']}")
    dnet, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(dnet)
    cache = None
    if trainable:
        from .pixelcache import make_caches, report_caches

        cache = make_caches(pre, [len(paths)], cfg.image_cache_mb / world)[0]
        report_caches(say, [cache], [len(paths)], cfg.image_cache_mb)
    images = dict(paths=paths, pre=pre, pixels=cache) if trainable else {}
    data = _Data(pooled, tokens, table, text_emb, tr, **images)
    vdata = _Data(pooled, tokens, table, text_emb, va, **images)
    t0 = time.perf_counter()
    steps = 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        plan = _Shard(epoch_order(len(data), cfg.seed, epoch), cfg.batch_size, rank, world, 1).plan
        dnet.train()
        sums = [0.0, 0.0, 0]
        t_epoch = time.perf_counter()
        for _, micro in plan:
            opt.zero_grad()
            with acc.autocast():
                con, aff = batch_losses(dnet, data.batch(micro[0], cfg.seed, epoch, acc.device), cfg, world,
                                        acc.device)
                loss = (con + cfg.affinity * aff) * world
            acc.backward(loss)
            opt.step()
            sched.step()
            with torch.no_grad():  # CLIP's cap on the logit scale (100)
                _net_of(core).logit_scale.clamp_(max=math.log(100.0))
            sums[0] += float(con.detach())
            sums[1] += float(aff.detach())
            sums[2] += 1
            steps += 1
        totals = _reduce(acc, sums[:2])
        row = {"epoch": epoch, "train_contrastive": totals[0] / max(sums[2], 1),
               "train_affinity": totals[1] / max(sums[2], 1)}
        row["train_loss"] = row["train_contrastive"] + cfg.affinity * row["train_affinity"]
        if len(vdata) >= 2:
            row.update(validation_losses(core, vdata, cfg, acc.device))
        row.update(train_seconds=round(time.perf_counter() - t_epoch, 3),
                   logit_scale=[round(float(v), 3) for v in _net_of(core).logit_scale.detach().exp()])
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f}"
            + (f", val contrastive {row['val_contrastive']:.4f}, val affinity {row['val_affinity']:.5f}"
               if "val_loss" in row else ""))
        best, best_epoch = close_epoch(acc, core, opt, sched, ck, rows, row, best, best_epoch, config=resume_key)
    seconds = time.perf_counter() - t0
    if cache is not None:
        cache.close()
    if not main:
        return None
    best_weights(core, ck)
    write_multiattr_dir(output, _net_of(core), spec, cfg, names, table, text_emb, encoder,
                        core.tower.backbone_state() if trainable else None)
    metrics = {"method": "multiattr", "init": cfg.init, "spaces": cfg.spaces, "attributes": names,
               "epochs": rows, "best_epoch": best_epoch, "processes": world, "precision": precision,
               "images": {"train": len(tr), "val": len(va), "unreadable": unreadable,
                          "unreadable_by_status": failed},
               "data": counts, "descriptions": len(table.texts), "steps": steps, "seconds": round(seconds, 3),
               "params": {k: v for k, v in vars(cfg).items() if k not in ("quiet",)}}
    from ..evaluation import json_safe

    (output / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
    _plot(rows, output / "training.png", parts=("contrastive", "affinity"), title="multi-attribute")
    say(f"pretrained multi-attribute model: best epoch {best_epoch} -> {output}")
    return output


def _quiet(cfg: MultiAttrConfig) -> MultiAttrConfig:
    from dataclasses import replace

    return replace(cfg, quiet=True)


def write_multiattr_dir(output: Path, net: MultiAttrNet, spec: dict, cfg: MultiAttrConfig, names: list[str],
                        table: DescriptionTable, text_emb: np.ndarray | None, encoder,
                        tower_state: dict | None = None) -> Path:
    """The model directory: ``multiattr/`` (the net, its tower's spec, the
    description bank in each space) and a ``config.json`` that makes the
    directory a per-attribute zero-shot scorer (method ``multiattr``) and a
    ``--backbone``."""
    from safetensors.torch import save_file

    from ..methods.multiattr import AttributeZeroShot
    from ..models import Critic
    from ..scoremap import ScoreMap

    d = output / MULTIATTR_DIR
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, str(d / "net.safetensors"))
    if tower_state is not None:  # a trained tower: its weights, loaded over the --init's
        save_file({k: v.detach().float().contiguous() for k, v in tower_state.items()}, str(d / "tower.safetensors"))
    # the bank: every training description, embedded in its space
    bank_texts, bank_vecs, bank_space = [], [], []
    with torch.no_grad():
        if text_emb is not None:
            for s in range(len(table.spaces)):
                used = sorted({i for opts in table.options for i in opts[s]})
                if used:
                    bank_vecs.append(net.text(torch.from_numpy(text_emb[used]), s).half())
                    bank_texts += [table.texts[i] for i in used]
                    bank_space += [s] * len(used)
        save_file({"vectors": torch.cat(bank_vecs) if bank_vecs else torch.zeros(0, net.config["space_dim"]).half(),
                   "space": torch.tensor(bank_space, dtype=torch.long)}, str(d / "bank.safetensors"))
        (d / "bank.json").write_text(json.dumps({"texts": bank_texts}, ensure_ascii=False) + "\n")
        prompts = {a: default_prompts(a) for a in names}
        flat = [t for a in names for pair in prompts[a] for t in pair]
        u = encoder.encode_text(flat).float().cpu().reshape(len(names), -1, 2, encoder.dim)
        space = [names.index(a) if cfg.spaces == "multi" else 0 for a in names]
        emb = torch.stack([net.text(u[a].reshape(-1, encoder.dim), space[a]).reshape(u.shape[1], 2, -1)
                           for a in range(len(names))])
        scales = net.logit_scale.exp()[space]
    save_file({"prompts": emb.float().contiguous(), "scales": scales.float().contiguous()},
              str(d / "prompts.safetensors"))  # the encoder's own zero-shot attribute scores
    tower = {k: v for k, v in spec.items()}
    config = {"format": "photocritic-multiattr", "version": 1, "tower": tower, "net": net.config,
              "attributes": names, "spaces": cfg.spaces, "text_encoder": cfg.text_encoder,
              "text_encoder_id": encoder.id, "affinity": cfg.affinity, "affinity_on": cfg.affinity_on,
              "affinity_form": cfg.affinity_form, "affinity_temperature": cfg.affinity_temperature,
              "tower_weights": "tower.safetensors" if tower_state is not None else None,
              "tower_view": "image.prelogits" if tower_state is not None else "image.pooled"}
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    head = AttributeZeroShot(attributes=tuple(names), spaces=tuple(table.spaces), prompts=prompts)
    head.set_embeddings(emb.numpy(), scales.numpy())
    model = Critic({"type": "multiattr", "name": MULTIATTR_DIR}, head, ScoreMap(center=0.0, scale=1.0, kind="linear"),
                   name=cfg.name or output.name,
                   description=f"multi-attribute pretraining ({cfg.spaces} space) on {Path(cfg.attributes).name} "
                               f"from {cfg.init}; zero-shot attribute scores, overall = their mean")
    model.save(output)
    return output
