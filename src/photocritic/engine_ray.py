"""``photocritic score --engine ray``: scoring (and feature extraction) on Ray Data.

Inputs are streamed into **shards** of ``shard_size`` images, in a fixed
order: image files and folders (as ``score`` lists them), text lists of
paths (``.txt``/``.lst``, one per line), CSV or Parquet lists (a ``path``
column, else the first), and WebDataset ``.tar`` shards (each image member
is one input, named ``SHARD.tar/MEMBER``; a tar is never unpacked to disk).
Each shard's inputs are written to ``OUT/_plan/`` and its results to
``OUT/part-NNNNN.parquet`` (atomically: a file there is complete), whose
metadata holds a digest of the shard's inputs and of the model. A re-run
(after a kill, say) skips every shard whose file is there with the same
digests and computes only the others; ``OUT/manifest.json`` lists the shards.

The pipeline: shard ids -> (task) their inputs -> (tasks, fractional CPUs)
read, hash and decode, as the local pipeline does, errors as row statuses
-> (an actor pool, fractional CPUs/GPUs; each actor loads the model once)
the model on batches -> the driver, which writes each shard when its last
row arrives. Memory stays flat in the number of images: the driver holds
the rows of the shards in flight, and Ray Data streams the rest. On 2 CPUs,
actors asking for a whole CPU each starve the decoding tasks, so the
defaults ask for fractions.

The same engine fills the feature store for ``photocritic train --engine
ray`` (:func:`embed_into_store`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import UsageError

LIST_EXTENSIONS = {".txt", ".lst"}
TAR_EXTENSIONS = {".tar"}
PLAN_DIR = "_plan"
FORMAT = "photocritic-ray-scores"


# -- inputs -----------------------------------------------------------------------

def _tar_members(tar_path: str):
    """(name, offset, size) of the image members of a tar, in order."""
    from .data.images import IMAGE_EXTENSIONS as exts
    try:
        with tarfile.open(tar_path, "r:") as tf:
            for m in tf:
                if m.isfile() and os.path.splitext(m.name)[1].lower() in exts:
                    yield m.name, m.offset_data, m.size
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"{tar_path}: not a readable uncompressed tar ({exc})") from None


def _list_file(path: Path):
    ext = path.suffix.lower()
    if ext in LIST_EXTENSIONS:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
    elif ext == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return
            col = header.index("path") if "path" in header else 0
            for row in reader:
                if len(row) > col and row[col].strip():
                    yield row[col].strip()
    else:  # parquet
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        col = "path" if "path" in names else names[0]
        for batch in pf.iter_batches(columns=[col], batch_size=65536):
            for v in batch.column(0).to_pylist():
                if v:
                    yield str(v)


def iter_sources(paths: list[str], recursive: bool = False):
    """(name, file, offset, size) per input image, in a fixed order: offset
    -1 for a whole file, else the member's place inside a tar ``file``."""
    from .data.images import list_images

    for p in paths:
        path = Path(p)
        ext = path.suffix.lower()
        if path.is_dir():
            for f in list_images([p], recursive=recursive):
                yield f, f, -1, -1
        elif ext in TAR_EXTENSIONS and path.is_file():
            for name, offset, size in _tar_members(p):
                yield f"{p}/{name}", p, offset, size
        elif (ext in LIST_EXTENSIONS or ext in (".csv", ".parquet")) and path.is_file():
            for f in _list_file(path):
                if f.lower().endswith(".tar"):
                    yield from iter_sources([f])
                else:
                    yield f, f, -1, -1
        elif os.path.lexists(p):
            yield p, p, -1, -1
        else:
            raise UsageError(f"{p}: no such file or folder")


def plan_shards(paths: list[str], out: Path, shard_size: int, recursive: bool = False) -> list[dict]:
    """Stream the inputs into plan files of ``shard_size`` inputs; returns
    [{"shard", "plan", "rows", "digest"}]. Only one shard's inputs are in
    memory at a time."""
    plan_dir = out / PLAN_DIR
    plan_dir.mkdir(parents=True, exist_ok=True)
    shards, chunk = [], []

    def flush():
        k = len(shards)
        text = "".join(json.dumps(s) + "\n" for s in chunk)
        plan = plan_dir / f"shard-{k:05d}.jsonl"
        if not plan.exists() or plan.read_text(encoding="utf-8") != text:
            tmp = plan.with_name(plan.name + ".part")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(plan)
        shards.append({"shard": k, "plan": str(plan), "rows": len(chunk),
                       "digest": hashlib.sha256(text.encode()).hexdigest()[:20]})
        chunk.clear()

    for src in iter_sources(paths, recursive):
        chunk.append(src)
        if len(chunk) == shard_size:
            flush()
    if chunk:
        flush()
    for stale in plan_dir.glob("shard-*.jsonl"):  # a shorter input list than last time
        if int(stale.stem.split("-")[1]) >= len(shards):
            stale.unlink()
    return shards


# -- the Ray stages -------------------------------------------------------------------

def _expand(row: dict) -> list[dict]:
    """A chunk of a shard's plan (lines ``start`` to ``stop``) -> one row per input."""
    with open(row["plan"], encoding="utf-8") as fh:
        lines = fh.readlines()[row["start"]:row["stop"]]
    return [{"shard": row["shard"], "idx": row["start"] + i, "name": s[0], "file": s[1], "offset": s[2],
             "size": s[3]} for i, s in enumerate(json.loads(line) for line in lines)]


def _read(file: str, offset: int, size: int, max_bytes: int) -> bytes:
    from .data.images import ImageError, read_bytes

    if offset < 0:
        return read_bytes(file, max_bytes)
    if size > max_bytes:
        raise ImageError("too_large", f"{file}: a member of {size} bytes is larger than the cap of {max_bytes}")
    if size == 0:
        raise ImageError("empty", "file is empty (0 bytes)")
    with open(file, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def decode_chunks(chunks: dict, preprocess: dict, max_bytes: int) -> dict:
    """(A Ray task) chunks of shard plans -> one row per input: hash and
    uint8 pixels (zeros where the input failed, with its status and
    message), decoded as the local pipeline decodes."""
    rows = [r for k in range(len(chunks["plan"])) for r in _expand(
        {"plan": str(chunks["plan"][k]), "shard": int(chunks["shard"][k]), "start": int(chunks["start"][k]),
         "stop": int(chunks["stop"][k])})]
    batch = {c: np.array([r[c] for r in rows]) for c in ("shard", "idx", "name", "file", "offset", "size")}
    from .data.images import ImageError, decode_for
    from .encoders.base import Preprocess
    from .features import content_hash

    pre = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in preprocess.items()})
    n = len(batch["name"])
    h, w = pre.output_size
    pixels = np.zeros((n, h, w, 3), np.uint8)
    status, error, hashes = [], [], []
    for k in range(n):
        name, digest = str(batch["name"][k]), ""
        try:
            data = _read(str(batch["file"][k]), int(batch["offset"][k]), int(batch["size"][k]), max_bytes)
            digest = content_hash(data)
            pixels[k] = decode_for(data, pre, name)
            kind, message = "ok", ""
        except ImageError as exc:
            kind, message = exc.kind, exc.message if exc.message.startswith(name) else f"{name}: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not end the run
            kind, message = "corrupt", f"{name}: unexpected {type(exc).__name__}: {exc}"
        status.append(kind)
        error.append(message)
        hashes.append(digest)
    return {"shard": batch["shard"], "idx": batch["idx"], "name": batch["name"], "hash": np.array(hashes),
            "status": np.array(status), "error": np.array(error), "pixels": pixels}


class Model:
    """The actor: loads the model once; a batch of decoded rows -> their
    outputs (``mode="score"``) or the view's embeddings (``mode="embed"``)."""

    def __init__(self, model: str | dict, mode: str = "score", device: str = "cpu", precision: str = "auto",
                 prompts: str | None = None, view: str | None = None, threads: int | None = None):
        import torch

        # Ray sets OMP_NUM_THREADS from the actor's (fractional) CPUs: 1; the
        # model is the stage that should use the cores. OpenMP's setting is
        # per thread, and Ray Data may call the actor from another thread
        # than this one: __call__ sets it again where it runs.
        self.threads = threads or os.cpu_count() or 1
        torch.set_num_threads(self.threads)
        if isinstance(model, dict):  # a backbone spec: feature extraction for training
            from .models import Critic
            from .scoremap import ScoreMap

            critic = Critic(model, None, ScoreMap()).configure(device=device, precision=precision)
            self.critic = critic.with_view(view) if view else critic
        else:
            from .zoo import load

            self.critic = load(model, device=device, precision=precision, prompts=prompts)
        self.mode = mode
        self.extra = tuple(getattr(self.critic, "extra_columns", ()))

    def __call__(self, batch: dict) -> dict:
        import torch

        from .pipeline import ScoreRow, fill_rows

        torch.set_num_threads(self.threads)
        ok = np.flatnonzero(batch["status"] == "ok")
        n = len(batch["status"])
        out = {k: batch[k] for k in ("shard", "idx", "name", "hash", "status", "error")}
        emb = self.critic.embed(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))) if len(ok) else None
        if self.mode == "embed":
            dim = emb.shape[1:] if emb is not None else (0,)
            full = np.zeros((n, *dim), np.float32)
            if emb is not None:
                full[ok] = emb
            out["embedding"] = full
            return out
        rows = [ScoreRow(path="") for _ in ok]
        if len(ok):
            fill_rows(rows, self.critic.outputs_from_embeddings(emb))
        score = np.full(n, np.nan)
        score[ok] = [r.score for r in rows]
        out["score"] = score
        if "distribution" in self.extra:
            dist = np.full((n, 10), np.nan)
            for j, r in zip(ok, rows):
                dist[j] = r.distribution
            out["distribution"] = dist
        for a in self.extra:
            if a not in ("distribution", "context_class"):
                col = np.full(n, np.nan)
                for j, r in zip(ok, rows):
                    col[j] = r.attributes.get(a, np.nan)
                out[f"attr:{a}"] = col
        if "context_class" in self.extra:
            cls = np.array([""] * n, dtype=object)
            for j, r in zip(ok, rows):
                cls[j] = r.context_class or ""
            out["context_class"] = cls
        return out


# -- running --------------------------------------------------------------------------

def init_ray(address: str | None, quiet: bool = True):
    """Connect to ``address`` (an existing cluster), else start an embedded local Ray."""
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray Data: pip install 'photocritic[ray]'") from None
    if ray.is_initialized():
        return ray
    import logging

    from ray.data import DataContext

    kw = {"include_dashboard": False, "log_to_driver": not quiet, "configure_logging": True,
          "logging_level": "ERROR" if quiet else "INFO"}
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(**kw)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc})") from None
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def _pipeline(ray, todo: list[dict], pre: dict, max_bytes: int, model_kw: dict, batch_size: int, actors: int,
              actor_cpus: float, actor_gpus: float, decode_cpus: float, decode_tasks: int | None = None):
    """Chunks of ``batch_size`` inputs (one block each, so decoding spreads
    over tasks) -> read + decode (tasks, at most ``decode_tasks`` at once)
    -> the model (actor pool)."""
    if decode_tasks is None:  # half the cluster's CPUs: the rest is the model's, and on 2 CPUs more
        # decoding processes starting at once delay the actors' start by seconds (benchmarks/ray.py)
        decode_tasks = max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
    chunks = [{"shard": s["shard"], "plan": s["plan"], "start": a, "stop": min(a + batch_size, s["rows"])}
              for s in todo for a in range(0, s["rows"], batch_size)]
    ds = ray.data.from_items(chunks, override_num_blocks=len(chunks))
    ds = ds.map_batches(decode_chunks, fn_kwargs={"preprocess": pre, "max_bytes": max_bytes}, batch_size=1,
                        num_cpus=decode_cpus, batch_format="numpy", udf_modifying_row_count=True,
                        compute=ray.data.TaskPoolStrategy(size=decode_tasks))
    ds = ds.map_batches(Model, fn_constructor_kwargs=model_kw, batch_size=batch_size,
                        num_cpus=actor_cpus, num_gpus=actor_gpus or None,
                        compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy")
    return ds


def _model_digest(model: str, critic) -> str:
    ident = {"model": str(model), "encoder": critic.encoder_key(),
             "score_map": str(getattr(critic, "score_map", "")), "columns": list(critic.extra_columns)}
    d = Path(str(model))
    if d.is_dir() and (d / "config.json").is_file():
        ident["config"] = (d / "config.json").read_text()
    elif d.is_file():
        ident["file"] = f"{d.stat().st_size}:{d.stat().st_mtime_ns}"
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def _shard_done(path: Path, shard: dict, model_digest: str) -> bool:
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        md = pq.read_metadata(path)
    except Exception:  # noqa: BLE001 - damaged: compute again
        return False
    meta = {k.decode(): v.decode() for k, v in (md.metadata or {}).items()}
    return (md.num_rows == shard["rows"] and meta.get("photocritic.inputs") == shard["digest"]
            and meta.get("photocritic.model") == model_digest)


def _write_shard(path: Path, rows: dict, shard: dict, model_digest: str, extra: tuple) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.argsort(rows["idx"])
    cols = {"path": pa.array([str(rows["name"][i]) for i in order], pa.string())}
    score = np.asarray(rows["score"], np.float64)[order]
    cols["score"] = pa.array([None if np.isnan(s) else float(s) for s in score], pa.float64())
    cols["status"] = pa.array([str(rows["status"][i]) for i in order], pa.string())
    cols["error"] = pa.array([str(rows["error"][i]) for i in order], pa.string())
    cols["cached"] = pa.array([False] * len(order), pa.bool_())
    for a in extra:
        if a == "distribution":
            d = np.asarray(rows["distribution"], np.float64)[order]
            cols[a] = pa.array([None if np.isnan(v).any() else [float(x) for x in v] for v in d],
                               pa.list_(pa.float64()))
        elif a == "context_class":
            cols[a] = pa.array([str(rows[a][i]) or None for i in order], pa.string())
        else:
            v = np.asarray(rows[f"attr:{a}"], np.float64)[order]
            cols[a] = pa.array([None if np.isnan(x) else float(x) for x in v], pa.float64())
    table = pa.table(cols).replace_schema_metadata({"photocritic.inputs": shard["digest"],
                                                    "photocritic.model": model_digest})
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table, tmp)
    tmp.replace(path)


def score_with_ray(paths: list[str], output: str | Path, model: str, *, recursive: bool = False,
                   address: str | None = None, shard_size: int = 1024, batch_size: int = 32,
                   actors: int = 1, actor_cpus: float = 0.5, actor_gpus: float = 0.0, decode_cpus: float = 0.25,
                   device: str = "cpu", precision: str = "auto", prompts: str | None = None,
                   max_bytes: int = 1 << 30, quiet: bool = True, log=None) -> dict:
    """Score every input into Parquet shards under ``output`` (see the
    module docstring); returns the run's counts. Shards already complete
    are not computed again."""
    from .zoo import load

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out}: --engine ray writes a folder of Parquet shards; {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    critic = load(model, device="cpu", precision=precision, prompts=prompts)  # metadata only: no tower loaded
    if getattr(critic, "reads_tokens", False):
        raise UsageError(f"model {critic.name} reads comments; --engine ray scores images only")
    extra = tuple(critic.extra_columns)
    digest = _model_digest(model, critic)
    shards = plan_shards(paths, out, shard_size, recursive)
    if not shards:
        raise UsageError("no image inputs found under " + ", ".join(paths))
    todo = [s for s in shards if not _shard_done(out / f"part-{s['shard']:05d}.parquet", s, digest)]
    t0 = time.perf_counter()
    computed = 0
    if todo:
        ray = init_ray(address, quiet)
        model_kw = {"model": str(model), "mode": "score", "device": device, "precision": precision,
                    "prompts": prompts}
        ds = _pipeline(ray, todo, asdict(critic.preprocess), max_bytes, model_kw, batch_size, actors, actor_cpus,
                       actor_gpus, decode_cpus)
        by_shard = {s["shard"]: s for s in todo}
        pending: dict[int, dict] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for k in np.unique(batch["shard"]):
                sel = batch["shard"] == k
                part = {c: v[sel] for c, v in batch.items() if c != "pixels"}
                acc = pending.setdefault(int(k), {c: [] for c in part})
                for c, v in part.items():
                    acc[c].append(v)
                if sum(len(v) for v in acc["idx"]) == by_shard[int(k)]["rows"]:
                    rows = {c: np.concatenate(v) for c, v in acc.items()}
                    _write_shard(out / f"part-{int(k):05d}.parquet", rows, by_shard[int(k)], digest, extra)
                    computed += by_shard[int(k)]["rows"]
                    del pending[int(k)]
                    if not quiet:
                        log(f"photocritic: shard {int(k)} written ({by_shard[int(k)]['rows']} images)")
        if pending:
            raise RuntimeError(f"shards {sorted(pending)} came back incomplete from Ray")
    seconds = time.perf_counter() - t0
    counts = _manifest(out, shards, digest, model, extra)
    counts.update(computed=computed, skipped_shards=len(shards) - len(todo), computed_shards=len(todo),
                  seconds=round(seconds, 3))
    return counts


def _manifest(out: Path, shards: list[dict], digest: str, model: str, extra: tuple) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = ok = 0
    failures: dict[str, int] = {}
    entries = []
    for s in shards:
        f = out / f"part-{s['shard']:05d}.parquet"
        status = pq.read_table(f, columns=["status"]).column("status")
        n_ok = int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
        for kind, n in zip(*np.unique(np.asarray(status.to_pylist(), dtype=object), return_counts=True)):
            if kind != "ok":
                failures[str(kind)] = failures.get(str(kind), 0) + int(n)
        total += s["rows"]
        ok += n_ok
        entries.append({"file": f.name, "rows": s["rows"], "ok": n_ok, "inputs_digest": s["digest"]})
    for stale in out.glob("part-*.parquet"):  # from a longer input list than this one
        if int(stale.stem.split("-")[1]) >= len(shards):
            stale.unlink()
    manifest = {"format": FORMAT, "version": 1, "model": str(model), "model_digest": digest,
                "columns": ["path", "score", "status", "error", "cached", *extra],
                "total": total, "scored": ok, "failed": total - ok, "failures": failures, "shards": entries}
    tmp = out / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / "manifest.json")
    return {"total": total, "scored": ok, "failed": total - ok, "failures": failures, "shards": len(shards)}


def read_shards(output: str | Path) -> list[dict]:
    """Every row of a ``--engine ray`` output folder, in input order."""
    import pyarrow.parquet as pq

    out = Path(output)
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for s in manifest["shards"]:
        rows += pq.read_table(out / s["file"]).to_pylist()
    return rows


def embed_into_store(critic, files: list[str], cache, *, address: str | None = None, batch_size: int = 32,
                     actors: int = 1, actor_cpus: float = 0.5, actor_gpus: float = 0.0, decode_cpus: float = 0.25,
                     max_bytes: int = 1 << 30, quiet: bool = True, work: str | Path | None = None) -> dict:
    """Compute ``critic``'s view embeddings of the ``files`` not yet in the
    feature store ``cache`` on Ray (decoding in tasks, the backbone in an
    actor pool) and store them under the key the local pipeline uses, so
    that the local pass that follows finds every one cached."""
    import tempfile

    from concurrent.futures import ThreadPoolExecutor

    from .pipeline import _hash_one

    key = critic.encoder_key()
    with ThreadPoolExecutor(max_workers=4) as pool:
        hashes = list(pool.map(lambda f: _hash_one(f, max_bytes)[0], files))
    have = set(cache.get_many([h for h in hashes if h], key)) if any(hashes) else set()
    missing = [f for f, h in zip(files, hashes) if h and h not in have]
    if not missing:
        return {"computed": 0, "cached": len(files)}
    ray = init_ray(address, quiet)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        shards = plan_shards(missing, Path(tmp), 1024)
        model_kw = {"model": dict(critic.encoder_spec), "mode": "embed", "device": critic.device,
                    "precision": critic.precision, "view": critic.view}
        ds = _pipeline(ray, shards, asdict(critic.preprocess), max_bytes, model_kw, batch_size, actors, actor_cpus,
                       actor_gpus, decode_cpus)
        n = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            good = np.flatnonzero(batch["status"] == "ok")
            cache.put_many([(str(batch["hash"][i]), batch["embedding"][i]) for i in good], key)
            n += len(good)
    return {"computed": n, "cached": len(files) - len(missing)}
