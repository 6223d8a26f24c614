"""The inputs of methods that read token views (MMLQ), for training,
scoring and evaluation alike.

For each input (an id, and the image file it names): the image's tokens
(``image.tokens``, through the normal scoring pipeline into the token
store) and its comments' tokens (``text.tokens``, see
:mod:`photocritic.textviews`). An input that cannot be given what the
method reads gets a status instead of a score, never a score made on empty
text or a missing image:

* ``no_comments``: the method reads comments and the image has none (or
  only blank ones) and no comment bank fills them;
* the pipeline's statuses (``unreadable``, ``missing``, ...) for image files.

With a :class:`~photocritic.retrieval.CommentBank` and ``retrieve_k``, an
image without comments gets the comments of its ``retrieve_k`` nearest bank
images instead (by its ``image.pooled`` embedding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .data.comments import image_id


def clean_comments(comments: list[str] | None) -> list[str]:
    return [c.strip() for c in comments or [] if c and c.strip()]


@dataclass
class TokenInputs:
    """``features[view]``: one (T, C) array per usable input, in the order
    of ``keep`` (positions in the input list); ``problems``: position ->
    (status, message) for the rest; ``report``: counts."""

    features: dict
    keep: list[int]
    problems: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    retrieved: dict = field(default_factory=dict)  # position -> Retrieved


def gather_token_inputs(method, ids: list[str], paths: list[str] | None, *, critic=None, encoder=None,
                        comments: dict | None = None, store=None, bank=None, retrieve_k: int = 0,
                        pooled_cache=None, score_kw: dict | None = None, groups: dict | None = None,
                        retrieve_all: bool = False) -> TokenInputs:
    """Everything ``method`` reads for each (id, path), from (and into) ``store``.
    ``groups`` (id -> group, covering ``ids`` and the bank): an image
    retrieves no comments from bank images of its own group.
    ``retrieve_all`` (with a bank and ``retrieve_k``): every image reads
    retrieved comments, its own (if any) unread, as an image without
    comments will be scored."""
    from .textviews import comment_tokens

    score_kw = dict(score_kw or {})
    n = len(ids)
    problems: dict[int, tuple[str, str]] = {}
    report: dict = {"listed": n}
    need_image = "image.tokens" in method.requires
    need_text = "text.tokens" in method.requires
    texts: dict[int, list[str]] = {}
    retrieved = {}
    if need_text:
        comments = comments or {}
        for k, i in enumerate(ids):
            kept = clean_comments(comments.get(i))
            if kept:
                texts[k] = kept
        lacking = [k for k in range(n) if k not in texts]
        report.update(with_comments=len(texts), without_comments=len(lacking))
        if retrieve_all and retrieve_k and bank is not None:
            report["own_comments_unread"] = len(texts)
            texts, lacking = {}, list(range(n))
        if lacking and retrieve_k and bank is not None:
            rows, vecs = pooled_embeddings(critic, [paths[k] for k in lacking], pooled_cache, score_kw)
            ok = [(k, r) for k, r in zip(lacking, rows) if r.status == "ok"]
            for k, r in zip(lacking, rows):
                if r.status != "ok":
                    problems[k] = (r.status, r.error)
            if ok:
                found = bank.retrieve(np.asarray(vecs), retrieve_k, query_ids=[ids[k] for k, _ in ok],
                                      query_groups=None if groups is None else [groups[ids[k]] for k, _ in ok],
                                      groups=groups)
                for (k, _), got in zip(ok, found):
                    retrieved[k] = got
                    texts[k] = got.comments
            report["retrieved"] = len(retrieved)
        else:
            for k in lacking:
                problems[k] = ("no_comments", f"{ids[k]}: no comments (the model reads comments; "
                                              f"train with --retrieve-comments K to fill them from a bank)")
    cand = [k for k in range(n) if k not in problems]
    text = None
    if need_text:
        keyed = {f"{k}": texts[k] for k in cand}  # by position: an id's own and retrieved sets differ
        text, rep = comment_tokens(encoder, keyed, list(keyed), store, getattr(method, "max_tokens", None))
        report["comment_sets"] = {k: v for k, v in rep.to_dict().items()
                                  if k in ("truncated", "computed", "from_store", "images_from_store")}
    image = None
    if need_image:
        tokens_critic = critic.with_view("image.tokens")
        rows = tokens_critic.score([paths[k] for k in cand], cache=store, **score_kw)
        ok = {}
        fails: dict[str, int] = {}
        for k, r in zip(cand, rows):
            if r.status == "ok":
                ok[k] = r.content_hash
            else:
                problems[k] = (r.status, r.error)
                fails[r.status] = fails.get(r.status, 0) + 1
        report.update(images_from_cache=rows.stats.cached, images_computed=rows.stats.computed,
                      image_failures=fails)
        got = store.get_many(list(dict.fromkeys(ok.values())), tokens_critic.encoder_key())
        image = {k: got[h] for k, h in ok.items()}
    keep = [k for k in cand if k not in problems]
    features = {}
    if image is not None:
        features["image.tokens"] = [image[k] for k in keep]
    if text is not None:
        features["text.tokens"] = [text[f"{k}"] for k in keep]
    report["used"] = len(keep)
    return TokenInputs(features, keep, problems, report, retrieved)


def describe(report: dict, name: str = "") -> list[str]:
    """Log lines for a :class:`TokenInputs` report."""
    pre = f"{name}: " if name else ""
    lines = []
    if "own_comments_unread" in report:
        lines.append(f"{pre}train_on_retrieved: {report.get('retrieved', 0)} of {report['listed']} images read "
                     f"retrieved comments; the own comments of {report['own_comments_unread']} are not read")
    elif report.get("without_comments"):
        how = (f"{report['retrieved']} filled by retrieval" if "retrieved" in report else "left out")
        lines.append(f"{pre}{report['without_comments']} of {report['listed']} images have no comments: {how}")
    sets = report.get("comment_sets", {})
    if sets.get("truncated"):
        lines.append(f"{pre}{sets['truncated']} comment sets cut to the token limit")
    if report.get("image_failures"):
        lines.append(f"{pre}images not read: " + ", ".join(f"{k}: {v}" for k, v in report["image_failures"].items()))
    return lines


def pooled_embeddings(critic, paths: list[str], cache, score_kw: dict):
    """(rows, ``image.pooled`` embeddings of the rows that read) through
    ``cache``, or through a temporary in-memory one when it is None."""
    from .features import EmbeddingCache

    own = EmbeddingCache(None) if cache is None else cache
    try:
        return critic.with_view("image.pooled").embed_paths(paths, own, **score_kw)
    finally:
        if own is not cache:
            own.close()


def commented_entries(critic, ids: list[str], paths: list[str], comments: dict, cache, score_kw: dict):
    """Comment-bank entries of the images that have comments and read:
    (ids, ``image.pooled`` embeddings, {id: cleaned comments})."""
    have = [j for j, i in enumerate(ids) if clean_comments(comments.get(i))]
    rows, vecs = pooled_embeddings(critic, [paths[j] for j in have], cache, score_kw)
    ok = [ids[j] for j, r in zip(have, rows) if r.status == "ok"]
    return ok, np.asarray(vecs), {i: clean_comments(comments[i]) for i in ok}


def inputs_bank(critic, bank, inputs: list[str], ids: list[str], comments: dict, pooled_cache, score_kw):
    """``bank`` extended with the inputs that have comments: the comment-less
    inputs then retrieve from the model's training images and from each
    other's commented ones."""
    ok, vecs, texts = commented_entries(critic, ids, inputs, comments, pooled_cache, score_kw)
    return bank.extended(ok, vecs, texts) if ok else bank


def score_token_model(critic, inputs, comments: dict | None, store, retrieve_k: int | None = None,
                      pooled_cache=None, ids: list[str] | None = None, bank_from_inputs: bool = False,
                      **score_kw):
    """Rows (as :meth:`Critic.score` returns) of a token-view model; with
    ``bank_from_inputs``, inputs without comments also retrieve from the
    inputs that have some (see :func:`inputs_bank`). ``rows.retrieved``:
    input -> the ids its comments were retrieved from."""
    from .models import ScoreRows
    from .pipeline import RunStats, ScoreRow, fill_rows

    inputs = [str(x) for x in inputs]
    ids = [image_id(x) for x in inputs] if ids is None else list(ids)
    if len(ids) != len(inputs):
        raise ValueError(f"{len(ids)} ids for {len(inputs)} inputs")
    method = critic.head
    k = getattr(method, "retrieve_comments", 0) if retrieve_k is None else retrieve_k
    bank = critic.comment_bank if k else None
    if bank is not None and bank_from_inputs and comments:
        bank = inputs_bank(critic, bank, inputs, ids, comments, pooled_cache, score_kw)
    got = gather_token_inputs(method, ids, inputs, critic=critic if critic.encoder_spec else None,
                              encoder=critic.text_encoder if "text.tokens" in method.requires else None,
                              comments=comments, store=store, bank=bank,
                              retrieve_k=k, pooled_cache=pooled_cache, score_kw=score_kw)
    rows = [ScoreRow(path=x) for x in inputs]
    stats = RunStats(total=len(rows))
    for pos, (status, error) in got.problems.items():
        rows[pos].status, rows[pos].error, rows[pos].score = status, error, math.nan
        stats.failed += 1
        stats.failures[status] = stats.failures.get(status, 0) + 1
    if got.keep:
        pred = method.predict(got.features)
        scores = critic.score_map(pred.score)
        out = {"score": scores, "binary": (scores > 5.0).astype(np.int64)}
        if pred.distribution is not None:
            out["distribution"] = pred.distribution
        fill_rows([rows[p] for p in got.keep], out)
    stats.scored = len(got.keep)
    if "image.tokens" in method.requires:  # an image counts as cached when its tokens were stored
        stats.cached = got.report.get("images_from_cache", 0)
    else:  # comments only: when its comment set's tokens were
        stats.cached = min(got.report.get("comment_sets", {}).get("images_from_store", 0), stats.scored)
    stats.computed = stats.scored - stats.cached
    out = ScoreRows(rows, stats)
    out.report = got.report
    out.retrieved = {inputs[pos]: r.sources for pos, r in got.retrieved.items()}
    return out
