"""Text views of user comments: ``text.tokens`` of each image's comments.

An image's comments are joined into one sequence ([CLS] c1 [SEP] c2 [SEP]
...), cut at a comment boundary to at most 512 tokens (MMLQ's limit; see
:meth:`photocritic.encoders.text.SentenceEncoder.comment_ids`), and encoded
once by a frozen text encoder. The token states (T x C, fp16) go to the
:class:`~photocritic.features.TokenStore`, keyed by a hash of the comments
and (encoder id, view, limit): a second run encodes nothing, a killed run
keeps what it stored, and reads are memory-mapped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .features import TokenStore

SEPARATOR = "\x1e"


def comments_hash(comments: list[str]) -> str:
    return hashlib.sha256(SEPARATOR.join(comments).encode("utf-8")).hexdigest()[:32]


def text_view_key(encoder_id: str, limit: int) -> str:
    return f"{encoder_id}|text.tokens|{limit}"


@dataclass
class CommentReport:
    """What happened to each image's comments."""

    with_comments: int = 0
    without_comments: list[str] = field(default_factory=list)  # ids with none (or only blank ones)
    truncated: int = 0  # comment sets cut to the token limit
    computed: int = 0  # distinct comment sets encoded now
    from_store: int = 0  # distinct comment sets read from the store
    images_from_store: int = 0  # images whose comment set was in the store already

    def to_dict(self) -> dict:
        return {"with_comments": self.with_comments, "without_comments": len(self.without_comments),
                "truncated": self.truncated, "computed": self.computed, "from_store": self.from_store,
                "images_from_store": self.images_from_store}


def comment_tokens(encoder, comments: dict[str, list[str]], ids: list[str], store: TokenStore,
                   limit: int | None = None, batch_size: int = 16, progress=None
                   ) -> tuple[dict[str, np.ndarray], CommentReport]:
    """``{id: (T, C) float16 token states}`` for every id in ``ids`` that has
    a non-blank comment, and a :class:`CommentReport`. Ids without comments
    are listed in the report, never encoded as empty text."""
    limit = min(limit or encoder.max_length, encoder.max_length)
    key = text_view_key(encoder.id, limit)
    report = CommentReport()
    hashes: dict[str, str] = {}
    texts: dict[str, list[str]] = {}
    for i in ids:
        kept = [c.strip() for c in comments.get(i, []) if c and c.strip()]
        if not kept:
            report.without_comments.append(i)
            continue
        texts[i] = kept
        hashes[i] = comments_hash(kept)
    report.with_comments = len(texts)
    stored = store.get_many(sorted(set(hashes.values())), key)
    todo: dict[str, list[int]] = {}  # hash -> token ids, for the sets not stored yet
    cut_of: dict[str, bool] = {}
    for i, h in hashes.items():
        if h not in cut_of:  # tokenising is cheap; the count covers stored sets too
            seq, cut_of[h] = encoder.comment_ids(texts[i], limit)
            if h not in stored:
                todo[h] = seq
        report.truncated += int(cut_of[h])
    order = sorted(todo, key=lambda h: len(todo[h]))  # similar lengths share a batch: little padding
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        states, mask = encoder.encode_ids([todo[h] for h in chunk])
        lengths = mask.sum(1).tolist()
        store.put_many([(h, states[k, :int(n)].cpu().numpy()) for k, (h, n) in enumerate(zip(chunk, lengths))],
                       key)
        if progress:
            progress(len(chunk))
    report.computed = len(todo)
    report.from_store = len(set(hashes.values())) - len(todo)
    report.images_from_store = sum(1 for h in hashes.values() if h in stored)
    got = store.get_many(sorted(set(hashes.values())), key) if todo else stored
    return {i: got[h] for i, h in hashes.items()}, report

