"""``photocritic train``: data -> features (or images) -> a method's fit ->
a model directory with metrics.json, training.png and the resolved config.

Frozen methods read their views through the normal scoring pipeline and
feature store, so a second run on the same data decodes no image. Methods
that train the image tower (``finetune``) go to :mod:`photocritic.training.trainer`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, OutputExistsError, UsageError, ViewError
from ..methods.base import Method, Targets
from ..registry import method_class

#: options every method shares; each reaches the method when its constructor takes it
COMMON = ("epochs", "batch_size", "lr", "seed")
DEFAULTS = {"split": None, "val_split": None, "images": None, "label_scale": None, "epochs": None,
            "batch_size": None, "lr": None, "seed": 0, "device": "cpu", "precision": "auto",
            "resume": False, "overwrite": False, "cache": None, "no_cache": False, "params": {},
            "workers": None, "decode": "auto", "quiet": False, "extract_batch_size": 32,
            "val_fraction": 0.1, "group_by": None, "name": None, "description": None, "half": False,
            "comments": None, "inputs": None, "text_encoder": None, "backbone": None,
            "retrieve_comments": None, "attribute_labels": None, "attribute_names": None,
            "engine": "local", "ray_address": None}
REQUIRED = ("method", "dataset", "output")
#: options that are parameters of the methods that take them
AS_PARAMS = ("inputs", "text_encoder", "retrieve_comments")


@dataclass
class TrainResult:
    output: Path
    metrics: dict
    config: dict
    notes: list[str] = field(default_factory=list)


def resolve_config(options: dict, config_file: str | None = None) -> dict:
    """Defaults < the config file (YAML or JSON) < options given on the command line."""
    cfg = dict(DEFAULTS)
    cfg["params"] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise UsageError(f"--config {config_file}: no such file")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                loaded = json.loads(text)
            else:
                import yaml

                loaded = yaml.safe_load(text)
        except Exception as exc:
            raise UsageError(f"--config {config_file}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                             f"({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {config_file}: the top level must be a mapping of option: value")
        loaded = {k.replace("-", "_"): v for k, v in loaded.items()}
        unknown = set(loaded) - set(DEFAULTS) - set(REQUIRED)
        if unknown:
            raise UsageError(f"--config {config_file}: unknown options {', '.join(sorted(unknown))}")
        base = path.parent
        for key in ("dataset", "images", "output", "cache"):  # relative to the config file
            if isinstance(loaded.get(key), str) and not Path(loaded[key]).expanduser().is_absolute():
                loaded[key] = os.path.normpath(base / loaded[key])
        cfg.update({k: v for k, v in loaded.items() if k != "params"})
        cfg["params"].update(loaded.get("params") or {})
    for k, v in options.items():
        if k == "params":
            cfg["params"].update(v or {})
        elif v is not None and not (v is False and k in cfg):
            cfg[k] = v
    missing = [k for k in REQUIRED if not cfg.get(k)]
    if missing:
        raise UsageError("train needs " + ", ".join("--" + k.replace("_", "-") for k in missing)
                         + " (on the command line or in --config)")
    return cfg


def build_method(cfg: dict) -> Method:
    cls = method_class(cfg["method"])
    names = cls.param_names()
    params = dict(cfg["params"])
    unknown = set(params) - set(names)
    if unknown:
        raise UsageError(f"method {cfg['method']} has no parameter {', '.join(sorted(unknown))} "
                         f"(it takes {', '.join(names)})")
    for k in COMMON:
        if cfg.get(k) is not None and k in names:
            params.setdefault(k, cfg[k])
    for k in AS_PARAMS:
        if cfg.get(k) is not None:
            if k not in names:
                raise UsageError(f"--{k.replace('_', '-')} applies to methods that read comments (mmlq), "
                                 f"not {cfg['method']}")
            params[k] = cfg[k]
    return cls(**params)


def val_ids(train_ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded ``fraction`` of the training ids, chosen by image id (so the
    same ids whatever the file order)."""
    ids = sorted(train_ids)
    k = max(1, int(round(fraction * len(ids))))
    pick = np.random.default_rng(seed).permutation(len(ids))[:k]
    return [ids[i] for i in sorted(pick)]


def prepare_output(output: Path, overwrite: bool, resume: bool, clear: bool = True) -> None:
    """Check that ``output`` may be written (not a file; empty unless
    --overwrite or --resume); with ``clear``, empty it for --overwrite and
    create it. Callers check first and clear only once training can start,
    so a run that fails on its data never deletes the previous model."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: a file; give a folder")
    if output.is_dir() and any(output.iterdir()) and not (overwrite or resume):
        raise OutputExistsError(f"--output {output} exists and is not empty; pass --overwrite to "
                                f"replace it (or --resume to continue a fine-tune)")
    if not clear:
        return
    if output.is_dir() and overwrite and not resume:
        for child in output.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    output.mkdir(parents=True, exist_ok=True)


def load_splits(cfg: dict, log, needs_images: bool = True) -> tuple:
    from ..data.datasets import load_dataset

    ds = load_dataset(cfg["dataset"], images=cfg["images"], label_scale=cfg["label_scale"])
    if ds.root is None and needs_images:
        raise UsageError(f"dataset {cfg['dataset']} has no image folder: pass --images DIR")
    if not ds.on_1_to_10:
        raise UsageError(f"dataset {cfg['dataset']} has MOS labels of unknown scale; say which with "
                         f"--label-scale (e.g. 0-100)")
    train = ds.split(cfg["split"], seed=cfg["seed"])[0] if cfg["split"] else ds
    if cfg["val_split"]:
        val = ds.split(cfg["val_split"], seed=cfg["seed"])[0]
        held = set(val.ids)
        train = train.subset([k for k in train.ids if k not in held], train.name)
        how = f"split {cfg['val_split']}"
    else:
        vids = val_ids(train.ids, cfg["val_fraction"], cfg["seed"])
        held = set(vids)
        val = train.subset(vids, f"{train.name}:val")
        train = train.subset([k for k in train.ids if k not in held], train.name)
        how = f"seeded {cfg['val_fraction']:.0%} of the training split (seed {cfg['seed']})"
    log(f"training on {len(train)} labelled images, validating on {len(val)} ({how})")
    return train, val, how


class _EpochLog:
    """Per-epoch train loss and validation metrics; a progress bar on stderr."""

    def __init__(self, method: Method, val_features: dict, val_targets: Targets, epochs: int | None,
                 quiet: bool, groups: np.ndarray | None = None):
        self.method, self.vf, self.vt, self.groups = method, val_features, val_targets, groups
        self.rows: list[dict] = []
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, unit="epoch", file=sys.stderr, leave=False, dynamic_ncols=True,
                            disable=None)

    def __call__(self, epoch: int, train_loss: float) -> dict:
        row = {"epoch": epoch, "train_loss": train_loss,
               **validation_metrics(self.method, self.vf, self.vt, self.groups)}
        self.rows.append(row)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{train_loss:.4f}", val_srcc=f"{row.get('srcc', float('nan')):.3f}")
        return row

    def close(self):
        if self.bar is not None:
            self.bar.close()


def validation_metrics(method: Method, features: dict, targets: Targets,
                       groups: np.ndarray | None = None) -> dict:
    """``prediction_metrics`` of the method on the validation features; with
    ``groups`` (``group_by``) also ``group_srcc``, the mean SRCC inside each
    group of 3 or more images: the ranking a grouped method is trained for."""
    pred = method.predict(features)
    # a rank score in [-1, 1] (vila-r) has no 1-10 threshold before its map: no accuracy
    out = prediction_metrics(pred.score, targets, pred.distribution, accuracy=method.name != "vila-r")
    if groups is not None:
        out["group_srcc"] = group_srcc(pred.score, targets.mean, groups)
    return out


def group_srcc(score: np.ndarray, target: np.ndarray, groups: np.ndarray) -> float:
    """Mean of the SRCCs inside each group of >= 3 images (NaN if none is defined)."""
    from .. import metrics as M
    from ..evaluation import safe_metric

    values = [safe_metric(M.srcc, score[groups == g], target[groups == g]) for g in np.unique(groups)
              if int((groups == g).sum()) >= 3]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def prediction_metrics(score: np.ndarray, targets: Targets, distribution: np.ndarray | None = None,
                       accuracy: bool = True) -> dict:
    """Per-epoch validation figures: SRCC, PLCC (NaN where undefined), MSE,
    accuracy and, for distributions, EMD (r = 2)."""
    from .. import metrics as M
    from ..evaluation import safe_metric

    out = {"srcc": safe_metric(M.srcc, score, targets.mean), "plcc": safe_metric(M.plcc, score, targets.mean),
           "mse": float(np.mean((score - targets.mean) ** 2))}
    if accuracy:
        out["accuracy"] = M.accuracy(score, targets.mean)
    if distribution is not None and targets.distribution is not None:
        out["emd"] = M.emd(distribution, targets.distribution, r=2)
    return out


def open_store(cfg: dict):
    """The feature store the options name (in memory with no_cache)."""
    from ..features import EmbeddingCache, default_cache_path

    return EmbeddingCache(None if cfg["no_cache"] else Path(cfg["cache"] or default_cache_path()).expanduser())


def present_images(ds) -> tuple[list[str], np.ndarray]:
    """The image files of ``ds`` that exist on disk, and their row indices
    (a missing image is left out; callers count it)."""
    paths = ds.image_paths()
    keep = [i for i, p in enumerate(paths) if os.path.exists(p)]
    return [paths[i] for i in keep], np.array(keep, dtype=int)


def extract(cfg: dict, spec: dict, ds, view: str, cache, log, critic=None, to: Path | None = None,
            keep: bool = True) -> tuple:
    """``view`` features of ``ds``'s images through the scoring pipeline and
    feature store; images missing or unreadable are left out and counted.
    Pass the ``critic`` a previous call returned to reuse its loaded encoder;
    ``to``: a ``.npy`` file to memory-map the features from (else in RAM);
    ``keep=False``: only fill the store (features come back as None)."""
    from ..features import gather
    from ..models import Critic
    from ..scoremap import ScoreMap

    if critic is None:
        from ..zoo import backbone_views

        critic = Critic(spec, None, ScoreMap()).configure(device=cfg["device"], precision=cfg["precision"])
        critic = critic.with_view(view)
        # the backbone's other small views come out of the same forward pass: store them too, so that
        # training another method on them decodes no image
        critic.also_store = [(critic.view_key(v), v) for v in ("image.pooled", "image.prelogits")
                             if v != view and v in backbone_views(spec)]
    files, present = present_images(ds)
    t0 = time.perf_counter()
    if cfg.get("engine") == "ray" and cache is not None:  # fill the store on Ray; the pass below reads it
        from ..engine_ray import embed_into_store

        got = embed_into_store(critic, files, cache, address=cfg.get("ray_address"),
                               batch_size=cfg["extract_batch_size"], quiet=cfg["quiet"])
        log(f"features on Ray: {got['computed']} computed, {got['cached']} already in the store")
    rows = critic.score(files, batch_size=cfg["extract_batch_size"], cache=cache,
                        progress=not cfg["quiet"], decode=cfg["decode"], workers=cfg["workers"])
    emb = gather(cache, critic.encoder_key(), [r.content_hash for r in rows if r.status == "ok"], to) \
        if keep else None
    ok = [present[k] for k, r in enumerate(rows) if r.status == "ok"]
    stats = rows.stats
    info = {"listed": len(ds), "missing": len(ds) - len(present),
            "failed": sum(1 for r in rows if r.status != "ok"), "used": len(ok),
            "from_cache": stats.cached, "computed": stats.computed,
            "seconds": round(time.perf_counter() - t0, 3)}
    idx = np.array(ok, dtype=int)
    info["ids"] = [ds.ids[i] for i in ok]
    targets = Targets(ds.mean[idx], None if ds.distribution is None else ds.distribution[idx])
    return {view: emb}, targets, info, critic


def train(options: dict, config_file: str | None = None, log=None) -> TrainResult:
    log = log or (lambda m: print(f"photocritic: {m}", file=sys.stderr))
    cfg = resolve_config(options, config_file)
    from ..zoo import backbone_spec, backbone_views

    method = build_method(cfg)
    if method.trained_by:
        raise UsageError(f"{method.name} is not trained by `photocritic train`: use `{method.trained_by}`"
                         + ("; per-attribute heads on such a model are `photocritic train attributes "
                            "--backbone DIR`" if method.has_attributes else ""))
    reads_images = any(v.startswith("image.") for v in method.requires) or method.trains_backbone
    if reads_images and not cfg["backbone"]:
        raise UsageError(f"train {method.name} needs --backbone (on the command line or in --config)")
    spec = backbone_spec(cfg["backbone"]) if reads_images else None
    notes: list[str] = []
    views = backbone_views(spec) if spec else set()
    if "text.tokens" in method.requires and hasattr(method, "text_encoder"):  # the method's own encoder
        views.add("text.tokens")
    if getattr(method, "anchor", None) == "text" and "text.pooled" not in views:
        method.anchor = "learned"
        notes.append(f"backbone {cfg['backbone']} has no text tower: VILA-R's anchor is learned "
                     f"(as with --no-anchor)")
        log(notes[-1])
    if hasattr(method, "choose_view"):  # e.g. attributes: the attribute spaces where the backbone has them
        method.choose_view(views)
    if cfg["attribute_labels"] and not method.has_attributes:
        raise UsageError(f"--attribute-labels trains per-attribute heads (train attributes), not {method.name}")
    lacking = [v for v in method.requires if v not in views]
    if lacking:
        raise ViewError(f"method {method.name} needs the view {', '.join(lacking)}, which backbone "
                        f"{cfg['backbone']} does not provide (it has {', '.join(sorted(views))})")
    if ranks_in_groups(cfg, method):
        import inspect

        if "groups" not in inspect.signature(method.fit).parameters:
            raise UsageError(f"group_by applies to ranking methods (vila-r) and to MMLQ with "
                             f"--retrieve-comments, not {method.name}")
    output = Path(cfg["output"]).expanduser()
    prepare_output(output, cfg["overwrite"], cfg["resume"], clear=False)
    train_set, val_set, val_how = load_splits(cfg, log, needs_images=reads_images)
    if any(v.endswith(".tokens") for v in method.requires):
        from .tokens import train_on_tokens

        return train_on_tokens(cfg, spec, method, train_set, val_set, output, notes, log, val_how)
    if method.trains_backbone:
        from .trainer import finetune_run

        return finetune_run(cfg, spec, method, train_set, val_set, output, notes, log)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        _extract_shard(cfg, spec, method.image_view, [train_set, val_set], rank, world, log)
        if rank != 0:
            return None
    cache = open_store(cfg)
    work = tempfile.TemporaryDirectory(prefix="photocritic-train-")  # memory-mapped features
    try:
        view = method.image_view
        xf, yt, info_t, critic = extract(cfg, spec, train_set, view, cache, log, to=Path(work.name) / "train.npy")
        vf, yv, info_v, _ = extract(cfg, spec, val_set, view, cache, log, critic, to=Path(work.name) / "val.npy")
        if method.texts():  # a VILA-R text anchor: text features, extracted like images
            xf["text.pooled"] = vf["text.pooled"] = critic.text_embeddings(method.texts(), cache=cache)
        if cfg["attribute_labels"]:
            attach_attributes(cfg, [(yt, info_t), (yv, info_v)], log)
    except BaseException:
        work.cleanup()
        raise
    finally:
        cache.close()
    try:
        return _fit_and_save(cfg, spec, method, train_set, output, notes, log, val_how,
                             (xf, yt, info_t), (vf, yv, info_v))
    finally:
        del xf, vf  # the memory maps, before their folder goes
        work.cleanup()


def attach_attributes(cfg: dict, parts, log) -> None:
    """Per-attribute scores of ``--attribute-labels`` onto each (targets,
    info) part, in its image order (NaN where an image has none)."""
    from ..data.attributes import read_attribute_scores
    from ..data.ava import LabelFormatError

    path = Path(cfg["attribute_labels"]).expanduser()
    if not path.is_file():
        raise UsageError(f"--attribute-labels {path}: no such file")
    names = cfg["attribute_names"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    try:
        names, scores = read_attribute_scores(path, names)
    except LabelFormatError as exc:
        raise DataError(str(exc)) from None
    for targets, info in parts:
        targets.attributes = np.array([[scores.get(i, {}).get(a, np.nan) for a in names] for i in info["ids"]],
                                      dtype=np.float64).reshape(len(info["ids"]), len(names))
        targets.attribute_names = tuple(names)
    have = int(np.isfinite(parts[0][0].attributes).any(axis=1).sum())
    log(f"attribute scores: {', '.join(names)} for {have} of {len(parts[0][1]['ids'])} training images "
        f"from {path.name}")


def _fit_and_save(cfg, spec, method, train_set, output, notes, log, val_how, tr, va, bank=None,
                  main: bool = True) -> TrainResult | None:
    """Fit ``method`` on the extracted features, then (in the main process
    only: ``main``) fit the score map and write the model and its reports."""
    (xf, yt, info_t), (vf, yv, info_v) = tr, va
    check_counts(method, info_t, info_v, train_set.name)
    method.check_targets(yt)
    log(f"features: {info_t['used'] + info_v['used']} images ({info_t['from_cache'] + info_v['from_cache']} "
        f"from the feature store), {info_t['missing'] + info_v['missing']} missing, "
        f"{info_t['failed'] + info_v['failed']} unreadable (left out)")
    fit_kw = {}
    ids_t, ids_v = info_t.pop("ids"), info_v.pop("ids")
    groups_v = None
    if ranks_in_groups(cfg, method):
        fit_kw["groups"] = label_column(cfg["dataset"], cfg["group_by"], ids_t)
        groups_v = label_column(cfg["dataset"], cfg["group_by"], ids_v)
        method.monitor = ("group_srcc", False)  # the best epoch ranks best inside groups
    epoch_log = _EpochLog(method, vf, yv, getattr(method, "epochs", 1), cfg["quiet"] or not main, groups_v)
    t0 = time.perf_counter()
    try:
        method.fit(xf, yt, val=(vf, yv), on_epoch=epoch_log, **fit_kw)
    finally:
        epoch_log.close()
    fit_seconds = time.perf_counter() - t0
    if not main:
        return None
    score_map = fit_score_map(method, xf, yt, fit_kw.get("groups"))
    from ..models import Critic

    model = Critic(spec, method, score_map, name=cfg["name"] or output.name,
                   description=cfg["description"] or f"{method.name} on {cfg['backbone'] or 'comments'}, trained on "
                                                     f"{train_set.name} ({info_t['used']} images)")
    prepare_output(output, cfg["overwrite"], cfg["resume"], clear=True)  # only now: a failed run loses nothing
    model.save(output, half=bool(cfg["half"]))
    if bank is not None:  # scoring fills missing comments from the same bank
        bank.save(output)
    final = validation_metrics(method, vf, yv, groups_v)
    metrics = {"method": method.name, "backbone": cfg["backbone"], "epochs": epoch_log.rows,
               "final_val": final, "history": getattr(method, "history_", None),
               "train_images": info_t, "val_images": info_v, "validation": val_how,
               "fit_seconds": round(fit_seconds, 3), "notes": notes}
    if method.has_attributes and yv.attributes is not None:
        from ..evaluation import attribute_metrics

        metrics["final_val_attributes"] = attribute_metrics(method.predict(vf).attributes, yv.attributes,
                                                            yv.attribute_names)
    if method.name == "linear":
        metrics["ridge_alpha"] = method.alpha_
        from ..methods.linear import plot_weights

        plot_weights(method, output / "weights.png")
    write_reports(output, cfg, metrics)
    log(f"trained {method.name}: val SRCC {final['srcc']:.3f}, PLCC {final['plcc']:.3f}"
        + (f", EMD {final['emd']:.4f}" if "emd" in final else "") + f" -> {output}")
    return TrainResult(output, metrics, cfg, notes)


def _extract_shard(cfg, spec, view, sets, rank: int, world: int, log) -> None:
    """Under torchrun: each process extracts its share of the images into
    the (shared, file) feature store; then the main process trains on it."""
    from accelerate import Accelerator

    if cfg["no_cache"]:
        raise UsageError("several processes share extracted features through the feature store; "
                         "drop --no-cache (or pass --cache FILE)")
    acc = Accelerator(cpu=cfg["device"] == "cpu")
    cache = open_store(cfg)
    try:
        for ds in sets:
            rows = list(range(rank, len(ds), world))
            extract(cfg, spec, ds.subset([ds.ids[i] for i in rows], ds.name), view, cache, log, keep=False)
    finally:
        cache.close()
    acc.wait_for_everyone()


def ranks_in_groups(cfg: dict, method: Method) -> bool:
    """Whether ``group_by`` groups the method's training pairs (vila-r); with
    MMLQ's ``retrieve_comments`` it only keeps retrieval to other groups
    (:mod:`photocritic.training.tokens`)."""
    return bool(cfg["group_by"]) and not getattr(method, "retrieve_comments", 0)


def label_column(dataset: str, column: str, ids: list[str]) -> np.ndarray:
    """One column of a generic labels file, in the order of ``ids`` (for
    ``group_by``: pairs are then ranked only inside a group, e.g. the
    synthetic world's ``source`` photo)."""
    import csv

    from ..data.comments import image_id

    path = Path(dataset)
    path = path / "labels.csv" if path.is_dir() else path
    if path.suffix.lower() != ".csv":
        raise UsageError(f"group_by reads a column of a labels .csv; {path} is not one")
    from ..data.ava import open_text

    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise UsageError(f"group_by: {path} has no column {column!r}")
        key = next((k for k in ("path", "image", "file", "filename", "image_id", "id")
                    if k in reader.fieldnames), None)
        value = {image_id(row[key]): row[column] for row in reader}
    names = sorted(set(value.values()))
    code = {n: i for i, n in enumerate(names)}
    return np.array([code[value[k]] for k in ids])


def check_counts(method: Method, info_t: dict, info_v: dict, name: str) -> None:
    if info_t["used"] < method.min_train or info_v["used"] < 2:
        raise DataError(f"too few labelled images for {method.name}: {info_t['used']} usable for "
                        f"training (needs {method.min_train}) and {info_v['used']} for validation "
                        f"(needs 2) in {name}; {info_t['missing'] + info_v['missing']} listed images "
                        f"are missing on disk and {info_t['failed'] + info_v['failed']} unreadable")


def fit_score_map(method: Method, features: dict, targets: Targets, groups: np.ndarray | None = None):
    """Methods whose output is already a 1-10 score get the identity map. A
    rank score (VILA-R) gets the logistic map that gives the training images
    the training labels' spread (:meth:`ScoreMap.match`); with ``groups``
    (``group_by``) on the deviations inside groups, each group's mean taken
    from raw scores and labels alike, since only those were ranked."""
    from ..scoremap import ScoreMap

    if method.name != "vila-r":
        return ScoreMap(center=0.0, scale=1.0, kind="linear")
    raw, y = np.asarray(method.predict(features).score, dtype=np.float64), np.asarray(targets.mean, np.float64)
    if groups is not None:
        raw_c, y_c = raw.copy(), y.copy()
        for g in np.unique(groups):
            i = groups == g
            raw_c[i] += raw.mean() - raw[i].mean()
            y_c[i] += y.mean() - y[i].mean()
        raw, y = raw_c, y_c
    return ScoreMap.match(raw, y)


def write_reports(output: Path, cfg: dict, metrics: dict) -> None:
    from ..evaluation import json_safe

    (output / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
    resolved = {k: v for k, v in cfg.items() if k not in ("quiet",)}
    (output / "train_config.json").write_text(json.dumps(resolved, indent=2, default=str) + "\n")
    plot_training(metrics["epochs"], output / "training.png", metrics["method"])


def plot_training(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ep = [r["epoch"] for r in rows]
    ax[0].plot(ep, [r["train_loss"] for r in rows], marker="o" if len(rows) < 3 else None)
    ax[0].set(xlabel="epoch", ylabel="train loss", title=title)
    for key in ("srcc", "plcc"):
        ax[1].plot(ep, [r.get(key) for r in rows], label=f"val {key.upper()}",
                   marker="o" if len(rows) < 3 else None)
    ax[1].set(xlabel="epoch", ylabel="correlation")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
