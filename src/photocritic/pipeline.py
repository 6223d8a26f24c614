"""Batched, streaming scoring of many images.

files -> content hash -> cache lookup -> (misses only) decode -> encoder ->
embeddings (committed to the cache batch by batch) -> the model's head ->
1-10 scores.

Decoding runs in one of two ways (``decode=``):

* ``"workers"``: worker processes decode the next batches while the model
  encodes this one. Right when the encoder does not need the CPU cores the
  workers use - a CUDA encoder.
* ``"threads"``: each batch is decoded by a thread pool over all cores (PIL
  releases the GIL), then encoded on all cores. On a CPU encoder this was
  measured faster: on 2 cores, a decoding process beside torch's threads
  slowed the encoder far more than the decode itself cost (one of its
  threads is descheduled and every parallel region waits for it) - see
  benchmarks/throughput.py.

``"auto"`` (the default) picks workers for a CUDA encoder and threads on CPU.

Nothing a single file does stops a run: every input gets a row, with
``status`` ``ok`` or one of :data:`photocritic.data.images.ERROR_KINDS` and a
specific ``error`` message.
"""

from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .data.images import DEFAULT_MAX_BYTES, ImageError, decode_for, prepare_pil, read_bytes
from .features import EmbeddingCache, content_hash


@dataclass
class ScoreRow:
    path: str
    score: float = math.nan
    status: str = "pending"
    error: str = ""
    cached: bool = False
    #: content hash the row's embedding is cached under (files only; not written out)
    content_hash: str = ""
    #: the method's own binary prediction (1 = good), see ``Critic.binary_rule``
    binary: int | None = None
    #: context rule only: the ImageNet class of the most similar prompt
    context_class: str | None = None
    #: distribution methods only: the predicted 10-bin score distribution
    distribution: list[float] | None = None
    #: methods with per-attribute scores: {attribute: score 1-10}
    attributes: dict | None = None
    #: with --percentiles: the score's percentile in the reference (0-100)
    percentile: float | None = None

    def __float__(self) -> float:
        return float(self.score)

    def as_dict(self, extra: tuple[str, ...] = ()) -> dict:
        out = {"path": self.path, "score": None if math.isnan(self.score) else float(self.score),
               "status": self.status, "error": self.error, "cached": self.cached}
        for name in extra:  # an attribute's column is its score (None where the row failed)
            out[name] = self.attributes.get(name) if self.attributes is not None else getattr(self, name, None)
        return out


@dataclass
class RunStats:
    total: int = 0
    scored: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    failures: dict = field(default_factory=dict)
    interrupted: int = 0
    #: library warnings seen during the run, by short name (counted, not printed)
    warnings: dict = field(default_factory=dict)

    def summary(self) -> str:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items()))
        return (f"photocritic: {self.total} images, {self.scored} scored "
                f"({self.cached} from cache, {self.computed} computed), {self.failed} failed"
                + (f" ({kinds})" if kinds else "")
                + (f", {self.interrupted} not done (interrupted)" if self.interrupted else "")
                + warnings_note(self.warnings))


def warnings_note(counts: dict) -> str:
    """``"; 3 library warnings (name: count, ...)"``, or "" when there were none."""
    if not counts:
        return ""
    return (f"; {sum(counts.values())} library warnings ("
            + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")")


class _DecodeDataset(torch.utils.data.Dataset):
    """Reads, hashes and decodes one file; errors come back as values."""

    def __init__(self, paths: list[str], preprocess, max_bytes: int | None = DEFAULT_MAX_BYTES):
        self.paths = paths
        self.preprocess = preprocess
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            data = read_bytes(path, self.max_bytes)
            return i, content_hash(data), decode_for(data, self.preprocess, path), None, None
        except ImageError as exc:
            return i, None, None, exc.kind, exc.message
        except Exception as exc:  # a decoder bug must not end the run either
            return i, None, None, "corrupt", f"{path}: unexpected {type(exc).__name__}: {exc}"


def _collate(items):
    ok = [it for it in items if it[3] is None]
    pixels = torch.from_numpy(np.stack([it[2] for it in ok])) if ok else None
    return {"index": [it[0] for it in ok], "hash": [it[1] for it in ok], "pixels": pixels,
            "errors": [(it[0], it[3], it[4]) for it in items if it[3] is not None]}


def _hash_one(path: str, max_bytes: int | None = DEFAULT_MAX_BYTES):
    try:
        return content_hash(read_bytes(path, max_bytes)), None, None
    except ImageError as exc:
        return None, exc.kind, exc.message


def split_inputs(inputs) -> tuple[list, list, list]:
    """(index, PIL image), (index, path) and (index, "not an image" message) of ``inputs``."""
    pil_items, path_items, others = [], [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Image.Image):
            pil_items.append((i, x))
        elif isinstance(x, (str, os.PathLike)):
            path_items.append((i, os.fspath(x)))
        else:
            others.append((i, f"input {i}: a {type(x).__name__} is neither a path nor a PIL image"))
    return pil_items, path_items, others


def each_batch(critic, inputs: list, rows: list, handle, batch_size: int = 16, workers: int | None = None,
               decode: str = "auto", max_bytes: int | None = DEFAULT_MAX_BYTES, progress: bool = False,
               desc: str = "processing", verb: str = "processed") -> list:
    """Decode ``inputs`` (paths and/or PIL images) for ``critic`` as scoring
    does and call ``handle(indices, uint8 pixel batch)`` per batch, which
    fills ``rows[i]`` (objects with ``path``, ``status``, ``error``). A bad
    input gets its status and message in its row, never an exception; if the
    run is stopped, the rows not reached are ``interrupted`` and the
    exception carries them as ``partial_rows``."""
    bar = _progress(len(inputs), progress, desc=desc)
    try:
        pil, files, others = split_inputs(inputs)
        for i, message in others:
            rows[i].status, rows[i].error = "not_image", message
            bar.update(1)

        def failed(i, exc):
            rows[i].status, rows[i].error = exc.kind, exc.message
            bar.update(1)

        pre = critic.preprocess
        for good, pixels in pil_batches(pil, pre, batch_size, [r.path for r in rows], failed):
            handle(good, pixels)
            bar.update(len(good))
        loader = decoded_batches([p for _, p in files], pre, batch_size, decode_mode(decode, critic.device), workers,
                                 max_bytes)
        for batch in loader:
            for j, kind, msg in batch["errors"]:
                rows[files[j][0]].status, rows[files[j][0]].error = kind, msg
                bar.update(1)
            if batch["pixels"] is not None:
                idx = [files[j][0] for j in batch["index"]]
                handle(idx, batch["pixels"])
                bar.update(len(idx))
    except BaseException as exc:
        for r in rows:
            if r.status == "pending":
                r.status, r.error = "interrupted", f"{r.path}: not {verb}: the run was stopped"
        exc.partial_rows = rows
        raise
    finally:
        bar.close()
    return rows


def pil_batches(items, pre, batch_size: int, names: list[str], failed):
    """(indices, uint8 pixel batch) of in-memory ``(index, PIL image)``
    items; an image that cannot be prepared goes to ``failed(index, ImageError)``."""
    for start in range(0, len(items), batch_size):
        good, arrays = [], []
        for i, im in items[start:start + batch_size]:
            try:
                arrays.append(prepare_pil(im, pre, names[i]))
                good.append(i)
            except ImageError as exc:
                failed(i, exc)
        if good:
            yield good, torch.from_numpy(np.stack(arrays))


def decoded_batches(paths: list[str], pre, batch_size: int, mode: str, workers: int | None,
                    max_bytes: int | None = DEFAULT_MAX_BYTES):
    """Batches of decoded files (``index``, ``hash``, ``pixels``, ``errors``),
    in threads or worker processes (see the module docstring)."""
    dataset = _DecodeDataset(paths, pre, max_bytes)
    if mode == "threads":
        return _thread_batches(dataset, batch_size, workers or os.cpu_count() or 1)
    n_workers = default_workers() if workers is None else workers
    if len(paths) <= batch_size:
        n_workers = 0  # not worth starting processes for one batch
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=n_workers, collate_fn=_collate,
                                       prefetch_factor=4 if n_workers else None, persistent_workers=False)


def _thread_batches(dataset, batch_size: int, threads: int):
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            yield _collate(list(pool.map(dataset.__getitem__, idx)))


def decode_mode(decode: str, device: str) -> str:
    if decode not in ("auto", "threads", "workers"):
        raise ValueError(f"decode must be auto, threads or workers, not {decode!r}")
    if decode == "auto":
        return "workers" if str(device).startswith("cuda") else "threads"
    return decode


def default_workers() -> int:
    """Half the cores, 1 to 4: the encoder's own threads need the rest (on
    2 cores, one decoding worker measured faster end to end than two)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class PlainProgress:
    """Progress for a stderr that is not a terminal (a log file, CI): a plain
    line every ``every`` seconds, never a carriage return."""

    def __init__(self, total: int, desc: str, every: float):
        self.total, self.desc, self.every, self.n = total, desc, every, 0
        self._last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self._last >= self.every and self.n < self.total:
            self._last = now
            pct = 100.0 * self.n / max(1, self.total)
            print(f"photocritic: {self.desc} {self.n}/{self.total} ({pct:.0f}%)", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str = "scoring"):
    """A tqdm bar on a terminal; plain periodic lines otherwise
    (``$PHOTOCRITIC_PROGRESS_SECONDS``, default 30)."""
    if not enabled:
        return PlainProgress(total, desc, math.inf)  # never prints
    if not sys.stderr.isatty():
        return PlainProgress(total, desc, float(os.environ.get("PHOTOCRITIC_PROGRESS_SECONDS", 30)))
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False, desc=desc)


def score_inputs(critic, inputs, batch_size: int = 32, cache: EmbeddingCache | None = None,
                 workers: int | None = None, progress: bool = False, decode: str = "auto",
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> tuple[list[ScoreRow], RunStats]:
    """Score paths and/or PIL images with ``critic``; rows come back in input order.

    ``workers``: decoding processes (``decode="workers"``) or threads
    (``decode="threads"``); default: half the cores, 1 to 4, for processes
    and all cores for threads. ``max_bytes``: files larger are ``too_large``.

    If the run is stopped (Ctrl-C, a cache failure), the exception carries
    ``partial_rows`` and ``partial_stats``: the finished rows, and the rest
    with status ``interrupted``, so that nothing finished is lost.
    """
    mode = decode_mode(decode, getattr(critic, "device", "cpu"))
    inputs = list(inputs)
    stats = RunStats(total=len(inputs))
    bar = _progress(len(inputs), progress)
    rows = [ScoreRow(path=f"<image {i}>" if isinstance(x, Image.Image) else _name(x))
            for i, x in enumerate(inputs)]
    try:
        _score_into(rows, stats, bar, critic, inputs, batch_size, cache, workers, mode, max_bytes, progress)
    except BaseException as exc:
        for row in rows:
            if row.status == "pending":
                row.status, row.error = "interrupted", f"{row.path}: not scored: the run was stopped"
                stats.interrupted += 1
        exc.partial_rows, exc.partial_stats = rows, stats
        raise
    finally:
        bar.close()
    return rows, stats


def _name(x) -> str:
    try:
        return os.fspath(x)
    except TypeError:
        return f"<{type(x).__name__}>"


def fill_rows(targets: list[ScoreRow], out: dict, cached: bool = False) -> None:
    """Set each row's score, status ``ok`` and the method's other outputs
    (binary call, context class, distribution) from ``outputs_from_embeddings``."""
    classes = out.get("context_class")
    dist = out.get("distribution")
    binary = out.get("binary")
    attributes, names = out.get("attributes"), out.get("attribute_names")
    for k, row in enumerate(targets):
        row.score, row.status, row.cached = float(out["score"][k]), "ok", cached
        if binary is not None:
            row.binary = int(binary[k])
        if classes is not None:
            row.context_class = classes[k]
        if dist is not None:
            row.distribution = [float(v) for v in dist[k]]
        if attributes is not None:
            row.attributes = {a: float(v) for a, v in zip(names, attributes[k])}


def _score_into(rows, stats, bar, critic, inputs, batch_size, cache, workers, mode, max_bytes, progress):
    def fail(row: ScoreRow, kind: str, message: str):
        row.status, row.error = kind, message
        stats.failed += 1
        stats.failures[kind] = stats.failures.get(kind, 0) + 1

    def finish(targets: list[ScoreRow], embeddings: np.ndarray, cached: bool):
        fill_rows(targets, critic.outputs_from_embeddings(embeddings), cached)
        stats.scored += len(targets)
        if cached:
            stats.cached += len(targets)
        else:
            stats.computed += len(targets)
        bar.update(len(targets))

    # In-memory images: no file, no cache; preprocess here, one failed row per bad image.
    pil_items, path_items, others = split_inputs(inputs)
    for i, message in others:
        fail(rows[i], "not_image", message)
        bar.update(1)
    pre = critic.preprocess
    def pil_failed(i, exc):
        fail(rows[i], exc.kind, exc.message)
        bar.update(1)

    for good, pixels in pil_batches(pil_items, pre, batch_size, [r.path for r in rows], pil_failed):
        if good:
            emb = critic.embed(pixels)
            finish([rows[i] for i in good], emb, cached=False)

    # Files: hash everything (threads; hashing releases the GIL), look up the cache.
    hashes: dict[int, str] = {}
    reading = _progress(len(path_items), progress and len(path_items) > 1000,
                        desc="reading")
    with ThreadPoolExecutor(max_workers=4) as pool:
        for (i, path), (h, kind, msg) in zip(path_items, pool.map(lambda it: _hash_one(it[1], max_bytes),
                                                                   path_items)):
            reading.update(1)
            if h is None:
                fail(rows[i], kind, msg)
                bar.update(1)
            else:
                hashes[i] = h
    reading.close()
    key = critic.encoder_key()
    # Cache hits, a chunk at a time: memory stays flat however many images are cached.
    found: set[str] = set()
    order = list(hashes)
    step = 4096
    start = 0
    while cache is not None and start < len(order):
        chunk = order[start:start + step]
        start += step
        got = cache.get_many([hashes[i] for i in chunk], key)
        hit = [i for i in chunk if hashes[i] in got]
        if not hit:
            continue
        found.update(hashes[i] for i in hit)
        for i in hit:
            rows[i].content_hash = hashes[i]
        # large views (tokens): bound the rows stacked at once to about 64 MiB
        sub = max(1, min(step, (64 << 20) // max(1, next(iter(got.values())).nbytes * 2)))
        for s0 in range(0, len(hit), sub):
            part = hit[s0:s0 + sub]
            finish([rows[i] for i in part], np.stack([got[hashes[i]] for i in part]), cached=True)
        del got

    # Misses: decode each distinct content once.
    by_hash: dict[str, list[int]] = {}
    for i, h in hashes.items():
        if h not in found:
            by_hash.setdefault(h, []).append(i)
    todo = [idx[0] for idx in by_hash.values()]
    if not todo:
        return
    for batch in decoded_batches([rows[i].path for i in todo], pre, batch_size, mode, workers, max_bytes):
        for j, kind, msg in batch["errors"]:
            first = rows[todo[j]].path
            for i in by_hash[hashes[todo[j]]]:
                # identical files were decoded once; each row names its own file
                own = msg if i == todo[j] or not msg.startswith(first) else rows[i].path + msg[len(first):]
                fail(rows[i], kind, own)
                bar.update(1)
        if batch["pixels"] is None:
            continue
        also = getattr(critic, "also_store", ()) if cache is not None else ()
        if also:  # other small views of the same forward pass, stored for later trainings
            out = critic.encode_pixels(batch["pixels"])
            emb = critic.view_of(out)
            for other_key, other_view in also:
                cache.put_many(list(zip(batch["hash"], critic.view_of(out, other_view))), other_key)
        else:
            emb = critic.embed(batch["pixels"])
        if cache is not None:
            cache.put_many(list(zip(batch["hash"], emb)), key)
        targets = []
        expanded = []
        for k, j in enumerate(batch["index"]):
            for i in by_hash[hashes[todo[j]]]:
                rows[i].content_hash = batch["hash"][k]
                targets.append(rows[i])
                expanded.append(k)
        finish(targets, emb[expanded], cached=False)
