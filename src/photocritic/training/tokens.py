"""`photocritic train` for methods on token views (MMLQ): image tokens
through the scoring pipeline into the token store, comment tokens through a
frozen text encoder into the same store; both read back memory-mapped, one
(T_i, C) row per image."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..methods.base import Method, Targets


def _silent(message: str) -> None:
    pass


def load_comments(cfg: dict, log) -> dict[str, list[str]]:
    from ..data.comments import load_comments_option

    if not cfg.get("comments"):
        raise UsageError("MMLQ with comments needs --comments PATH (a .json, .jsonl or a folder of .txt)")
    comments = load_comments_option(cfg["comments"])
    log(f"comments: {sum(len(v) for v in comments.values())} for {len(comments)} images from {cfg['comments']}")
    return comments


def token_features(cfg: dict, method: Method, ds, store, log, critic=None, encoder=None,
                   comments: dict | None = None, bank=None, pooled_cache=None,
                   groups: dict | None = None) -> tuple[dict, Targets, dict]:
    """The token views ``method`` requires for the images of ``ds``, as
    lists of memory-mapped (T_i, C) arrays in one row order, the targets of
    those rows, and counts: images left out for missing comments, missing
    files or unreadable files are counted, never scored on empty input."""
    from ..tokeninputs import describe, gather_token_inputs

    t0 = time.perf_counter()
    k = getattr(method, "retrieve_comments", 0)
    got = gather_token_inputs(method, list(ds.ids), ds.image_paths() if critic is not None else None,
                              critic=critic, encoder=encoder, comments=comments, store=store, bank=bank,
                              retrieve_k=k if bank is not None else 0, pooled_cache=pooled_cache, groups=groups,
                              retrieve_all=bool(getattr(method, "train_on_retrieved", False)),
                              score_kw=dict(batch_size=cfg["extract_batch_size"], progress=not cfg["quiet"],
                                            decode=cfg["decode"], workers=cfg["workers"]))
    for line in describe(got.report, ds.name):
        log(line)
    fails = got.report.get("image_failures", {})
    info: dict = {"listed": len(ds), "missing": fails.get("missing", 0),
                  "failed": sum(v for s, v in fails.items() if s != "missing"),
                  "from_cache": got.report.get("images_from_cache", 0),
                  "computed": got.report.get("images_computed", 0),
                  **{key: got.report[key] for key in ("with_comments", "without_comments", "retrieved",
                                                      "own_comments_unread", "comment_sets")
                     if key in got.report}}
    idx = np.array(got.keep, dtype=int)
    targets = Targets(ds.mean[idx], None if ds.distribution is None else ds.distribution[idx])
    info.update(used=len(idx), ids=[ds.ids[i] for i in idx], seconds=round(time.perf_counter() - t0, 3))
    return got.features, targets, info


def build_bank(cfg: dict, critic, ds, comments: dict, cache, log):
    """The comment bank of ``ds``: the ``image.pooled`` embeddings, ids and
    comments of its images that have comments."""
    from ..retrieval import CommentBank
    from ..tokeninputs import commented_entries

    bank = CommentBank(*commented_entries(critic, list(ds.ids), ds.image_paths(), comments, cache,
                                          dict(batch_size=cfg["extract_batch_size"], progress=not cfg["quiet"],
                                               decode=cfg["decode"], workers=cfg["workers"])))
    log(f"comment bank: {len(bank)} training images with comments ({bank.index.backend} search)"
        + (f"; {bank.index.note}" if bank.index.note else ""))
    return bank


def train_on_tokens(cfg: dict, spec: dict | None, method: Method, train_set, val_set, output: Path, notes,
                    log, val_how: str):
    from ..encoders.text import text_encoder
    from ..features import EmbeddingCache, default_cache_path, token_session
    from .run import _fit_and_save

    comments = encoder = critic = bank = None
    k = getattr(method, "retrieve_comments", 0)
    acc = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: data-parallel training
        from accelerate import Accelerator

        if cfg["no_cache"]:
            raise UsageError("several processes share extracted features through the feature store; "
                             "drop --no-cache (or pass --cache FILE)")
        acc = Accelerator(cpu=cfg["device"] == "cpu")
        method.data_parallel = True
        if not acc.is_main_process:
            log = _silent
            cfg = {**cfg, "quiet": True}
    if k and "text.tokens" not in method.requires:
        raise UsageError("--retrieve-comments fills in comments; the model reads none (--inputs image)")
    if getattr(method, "train_on_retrieved", False) and not k:
        raise UsageError("--train-on-retrieved trains on retrieved comments: pass --retrieve-comments K")
    if k and spec is None:
        raise UsageError("--retrieve-comments finds the comments of similar images: it needs --backbone "
                         "(image embeddings), also with --inputs comments")
    if "text.tokens" in method.requires:
        comments = load_comments(cfg, log)
        encoder = text_encoder(method.text_encoder, device=cfg["device"])
        known = set(train_set.ids) | set(val_set.ids)
        unknown = sum(1 for c in comments if c not in known)
        if unknown:
            notes.append(f"{unknown} images in --comments are not in the training or validation split "
                         f"(other splits, or unknown ids): not used")
            log(notes[-1])
    if spec is not None:
        from ..models import Critic
        from ..scoremap import ScoreMap

        critic = Critic(spec, None, ScoreMap()).configure(device=cfg["device"], precision=cfg["precision"])
    with token_session(None if cfg["no_cache"] else cfg["cache"] or default_cache_path()) as (store, path):
        pooled_cache = EmbeddingCache(path) if k else None
        try:
            # under torchrun the main process extracts first; the others then read the store
            with acc.main_process_first() if acc is not None else contextlib.nullcontext():
                groups = None
                if k:
                    bank = build_bank(cfg, critic, train_set, comments, pooled_cache, log)
                    if cfg["group_by"]:  # training images retrieve as unseen images will: from other groups
                        from .run import label_column

                        both = list(train_set.ids) + list(val_set.ids)
                        groups = dict(zip(both, label_column(cfg["dataset"], cfg["group_by"], both).tolist()))
                        notes.append(f"group_by {cfg['group_by']}: images retrieve comments only from images "
                                     f"of other groups")
                        log(notes[-1])
                    elif getattr(method, "train_on_retrieved", False):
                        notes.append("train_on_retrieved without --group-by: a training image may retrieve the "
                                     "comments of other versions of its photo, which an unseen photo can only "
                                     "when its other versions join the bank (score --retrieve-from-inputs)")
                        log(notes[-1])
                tr = token_features(cfg, method, train_set, store, log, critic, encoder, comments, bank,
                                    pooled_cache, groups)
                va = token_features(cfg, method, val_set, store, log, critic, encoder, comments, bank,
                                    pooled_cache, groups)
            return _fit_and_save(cfg, spec, method, train_set, output, notes, log, val_how, tr, va, bank=bank,
                                 main=acc is None or acc.is_main_process)
        finally:
            if pooled_cache is not None:
                pooled_cache.close()
