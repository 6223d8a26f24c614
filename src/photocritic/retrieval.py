"""Comments for images that have none: k-nearest-neighbour retrieval from
a comment bank in image-embedding space (MMLQ's stated future direction).

:class:`VectorIndex` finds the most cosine-similar bank vectors of each
query. Up to :data:`EXACT_LIMIT` bank images the search is exact (a blocked
matrix product on CPU, ties broken by the lower bank position); above it,
when ``faiss-cpu`` is installed (``pip install 'photocritic[retrieval]'``),
an HNSW graph over inner products of normalised vectors, an approximate
search whose cost grows with log N instead of N. Without faiss the search
stays exact, and says so.

:class:`CommentBank` holds the bank: the ids, image embeddings and comments
of the training images that have comments. An image without comments gets
the comments of its ``k`` nearest bank images, most similar first (its own
id is never retrieved). A model trained with retrieval keeps its bank in
its directory (``comment_bank/``), so scoring and ``critique --retrieve``
use the same one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError

EXACT_LIMIT = 100_000
BANK_DIR = "comment_bank"


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def exact_topk(bank: np.ndarray, queries: np.ndarray, k: int, block: int = 1024
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of ``queries`` against ``bank`` (both
    normalised): (similarities, positions), best first, ties to the lower
    position. Memory: one (block, N) similarity block at a time."""
    n = len(bank)
    k = min(k, n)
    sims = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), block):
        part = queries[s:s + block] @ bank.T
        if k < n:
            cand = np.argpartition(-part, k - 1, axis=1)[:, :k]
        else:
            cand = np.broadcast_to(np.arange(n), part.shape).copy()
        vals = np.take_along_axis(part, cand, axis=1)
        order = np.lexsort((cand, -vals), axis=1)  # by similarity, then position
        idx[s:s + block] = np.take_along_axis(cand, order, axis=1)
        sims[s:s + block] = np.take_along_axis(vals, order, axis=1)
    return sims, idx


def faiss_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


class VectorIndex:
    """Cosine k-NN over ``vectors`` (N, D). ``backend``: ``auto`` (exact up
    to :data:`EXACT_LIMIT` vectors, faiss HNSW above it where faiss is
    installed), ``exact`` or ``faiss``."""

    def __init__(self, vectors: np.ndarray, backend: str = "auto", hnsw_m: int = 32, ef_search: int = 128):
        self.vectors = normalise(vectors)
        if backend not in ("auto", "exact", "faiss"):
            raise UsageError(f"retrieval backend must be auto, exact or faiss, not {backend!r}")
        if backend == "faiss" and not faiss_available():
            raise UsageError("retrieval backend faiss: faiss-cpu is not installed "
                             "(pip install 'photocritic[retrieval]')")
        if backend == "auto":
            backend = "faiss" if len(self.vectors) > EXACT_LIMIT and faiss_available() else "exact"
        self.backend = backend
        self.note = ""
        if len(self.vectors) > EXACT_LIMIT and backend == "exact":
            self.note = (f"{len(self.vectors)} bank images: exact search (faiss-cpu is not installed; "
                         f"with it, an approximate HNSW search)")
        self._faiss = None
        if backend == "faiss":
            import faiss

            index = faiss.IndexHNSWFlat(self.vectors.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(2 * hnsw_m, 80)
            index.add(np.ascontiguousarray(self.vectors))
            index.hnsw.efSearch = ef_search
            self._faiss = index

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, bank positions), each (Q, min(k, N)), best first."""
        q = normalise(np.atleast_2d(queries))
        if len(self) == 0:
            raise UsageError("the comment bank is empty: no training image has comments")
        if self._faiss is None:
            return exact_topk(self.vectors, q, k)
        k = min(k, len(self))
        self._faiss.hnsw.efSearch = max(self._faiss.hnsw.efSearch, k)
        sims, idx = self._faiss.search(np.ascontiguousarray(q), k)
        return sims.astype(np.float32), idx.astype(np.int64)


@dataclass
class Retrieved:
    """The comments retrieved for one image, most similar source first."""

    sources: list[str]
    similarities: list[float]
    comments: list[str]


class CommentBank:
    """Ids, image embeddings (one row per id) and comments of the images
    comments are retrieved from."""

    def __init__(self, ids: list[str], vectors: np.ndarray, comments: dict[str, list[str]],
                 backend: str = "auto"):
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.ids = list(ids)
        self.comments = {i: list(comments[i]) for i in self.ids}
        self.index = VectorIndex(vectors, backend)

    def __len__(self) -> int:
        return len(self.ids)

    def retrieve(self, queries: np.ndarray, k: int, query_ids: list[str] | None = None,
                 query_groups: list | None = None, groups: dict | None = None) -> list[Retrieved]:
        """The comments of the ``k`` nearest bank images of each query (its
        own id, when in the bank, left out). With ``query_groups`` and
        ``groups`` (bank id -> group), bank images of the query's own group
        are left out too: training images then retrieve as unseen ones do
        (``train --group-by``: no comments from other edits of one photo)."""
        if k < 1:
            raise UsageError(f"retrieve k must be at least 1, not {k}")
        extra = 1 if query_ids is not None else 0
        if query_groups is not None:
            if groups is None:
                raise ValueError("query_groups needs the bank's groups")
            sizes: dict = {}
            for i in self.ids:
                sizes[groups[i]] = sizes.get(groups[i], 0) + 1
            extra = max(sizes.values(), default=0) + extra
        sims, idx = self.index.search(queries, k + extra)
        out = []
        for r in range(len(sims)):
            own = query_ids[r] if query_ids is not None else None
            group = query_groups[r] if query_groups is not None else None
            pairs = [(int(j), float(s)) for j, s in zip(idx[r], sims[r]) if j >= 0 and self.ids[j] != own
                     and (group is None or groups[self.ids[j]] != group)][:k]
            sources = [self.ids[j] for j, _ in pairs]
            out.append(Retrieved(sources, [s for _, s in pairs],
                                 [c for src in sources for c in self.comments[src]]))
        return out

    def extended(self, ids: list[str], vectors: np.ndarray, comments: dict[str, list[str]]) -> "CommentBank":
        """A new bank holding this one's images and ``ids`` (whose entries
        replace this bank's under the same id), searched the same way."""
        new = set(ids)
        keep = [j for j, i in enumerate(self.ids) if i not in new]
        old = self.index.vectors[keep].astype(np.float32)
        vecs = np.concatenate([old, np.asarray(vectors, np.float32).reshape(len(ids), -1)])
        both = {**{self.ids[j]: self.comments[self.ids[j]] for j in keep}, **{i: comments[i] for i in ids}}
        return CommentBank([self.ids[j] for j in keep] + list(ids), vecs, both)

    # -- persistence -----------------------------------------------------
    def save(self, directory: Path, half: bool = True) -> Path:
        directory = Path(directory) / BANK_DIR
        directory.mkdir(parents=True, exist_ok=True)
        vec = self.index.vectors.astype(np.float16 if half else np.float32)
        np.save(directory / "vectors.tmp.npy", vec)
        os.replace(directory / "vectors.tmp.npy", directory / "vectors.npy")
        with open(directory / "comments.tmp", "w", encoding="utf-8") as fh:
            for i in self.ids:
                fh.write(json.dumps({"id": i, "comments": self.comments[i]}, ensure_ascii=False) + "\n")
        os.replace(directory / "comments.tmp", directory / "comments.jsonl")
        return directory

    @classmethod
    def load(cls, directory: Path, backend: str = "auto") -> "CommentBank":
        directory = Path(directory) / BANK_DIR
        vectors = np.load(directory / "vectors.npy", mmap_mode="r")
        ids, comments = [], {}
        with open(directory / "comments.jsonl", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                ids.append(rec["id"])
                comments[rec["id"]] = rec["comments"]
        return cls(ids, np.asarray(vectors, dtype=np.float32), comments, backend)
