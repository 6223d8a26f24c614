"""The ``photocritic`` command line."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PhotocriticError, UsageError
from .features import CacheError

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
COLUMNS = ["path", "score", "status", "error", "cached"]

class OutputError(OSError):
    """Rows could not be written where asked; ``fallback`` says where they went."""


def _write_format(records: list[dict], path: Path, fmt: str, columns: list[str]) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        if fmt == "csv":  # a distribution becomes the columns p1..p10
            flat = [c for c in columns if c != "distribution"]
            if "distribution" in columns:
                flat += [f"p{k}" for k in range(1, 11)]
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=flat)
                w.writeheader()
                for rec in records:
                    if "score" in rec:
                        rec = {**rec, "score": "" if rec["score"] is None else f"{rec['score']:.6f}"}
                    dist = rec.pop("distribution", None)
                    if "distribution" in columns:
                        rec.update({f"p{k + 1}": "" if dist is None else f"{v:.6f}"
                                    for k, v in enumerate(dist or [None] * 10)})
                    w.writerow(rec)
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"score": pa.float64(), "cached": pa.bool_(), "distribution": pa.list_(pa.float64()),
                     "percentile": pa.float64(), "group": pa.int64(), "rank": pa.int64(), "rating": pa.int64(),
                     "sharpness": pa.float64()}
            table = pa.table({c: pa.array([r[c] for r in records], types.get(c, pa.string()))
                              for c in columns})
            pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _output_format(output: Path) -> str:
    """csv, jsonl or parquet by the extension; UsageError for any other."""
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {output}: unknown extension {output.suffix!r}; "
                         f"use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def write_rows(rows, output: str | Path, extra: tuple[str, ...] = (), columns: list[str] | None = None) -> Path:
    """Write score rows (or other rows with ``as_dict`` and their
    ``columns``) as CSV, JSONL or Parquet, chosen by the extension.

    If the file cannot be written, the rows go to a fallback file (beside
    it, else in the current folder, else in the temp folder) and
    :class:`OutputError` says where: finished rows are never lost."""
    import tempfile

    output = Path(output)
    fmt = _output_format(output)
    records = [r.as_dict(extra) for r in rows]
    columns = (COLUMNS if columns is None else columns) + list(extra)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        _write_format(records, output, fmt, columns)
        return output
    except OSError as exc:
        first = exc
    name = f"{output.stem}.photocritic-fallback-{os.getpid()}{output.suffix}"
    for folder in (output.parent, Path.cwd(), Path(tempfile.gettempdir())):
        try:
            _write_format(records, folder / name, fmt, columns)
        except OSError:
            continue
        raise OutputError(f"cannot write --output {output} ({_describe(first)}); the {len(records)} "
                          f"rows were written to {folder / name} instead")
    raise OutputError(f"cannot write --output {output} ({_describe(first)}), nor a fallback file "
                      f"beside it, in {Path.cwd()} or in {tempfile.gettempdir()}; the rows are lost")


def check_output(output: str | Path) -> None:
    """Before any image is scored: the extension is known and the file can be
    created (a probe file is written and removed)."""
    output = Path(output)
    _output_format(output)
    if output.is_dir():
        raise UsageError(f"--output {output}: is a directory; give a file name")
    probe = output.with_name(output.name + ".part")
    blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"--output {output}: cannot write there ({blocker} is a file, not a "
                          f"folder); nothing was scored")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"--output {output}: cannot write there ({_describe(exc)}); "
                          f"nothing was scored") from None


def format_table(rows, extra: tuple[str, ...] = ()) -> str:
    ok = sorted((r for r in rows if r.status == "ok"), key=lambda r: -r.score)
    bad = [r for r in rows if r.status != "ok"]
    show_class = "context_class" in extra
    show_pct = "percentile" in extra
    lines = [f"{'rank':>4}  {'score':>6}  " + ("pctile  " if show_pct else "") + ("class  " if show_class else "")
             + "path"]
    for k, r in enumerate(ok, 1):
        lines.append(f"{k:>4}  {r.score:6.2f}  " + (f"{r.percentile:6.1f}  " if show_pct else "")
                     + (f"{r.context_class}  " if show_class else "") + r.path)
    if bad:
        lines.append("")
        lines.append("not scored:")
        for r in bad:
            lines.append(f"  {r.status:<11} {r.error}")
    return "\n".join(lines)


def _cmd_score(args) -> int:
    if args.embeddings:
        return _score_embeddings(args)
    if args.engine == "ray":
        return _score_ray(args)
    comments = _read_comments_option(args.comments)
    critic = None
    if comments is not None:  # a comments-only model scores ids: it opens no image
        critic = _load(args)
        if critic.reads_tokens and critic.encoder_spec is None:
            return _score_comments_only(args, critic, comments)
    if not args.paths:
        raise UsageError("give image files or folders to score (or --embeddings FILE)")
    _check_paths(args.paths)
    if args.output:
        check_output(args.output)
    paths = _listed_images(args.paths, args.recursive)
    critic = critic or _load(args)
    if comments is None and critic.reads_tokens and critic.encoder_spec is None:
        raise UsageError(f"model {critic.name} reads only comments: pass --comments PATH")
    extra = {"comments": comments} if comments is not None else {}
    if args.retrieve_from_inputs:
        if comments is None:
            raise UsageError("--retrieve-from-inputs retrieves from the inputs' comments: pass --comments PATH")
        critic.comment_bank  # noqa: B018 - a clear error for a model without one
        extra["bank_from_inputs"] = True
    reference = None
    if args.percentiles:
        from .reference import load_reference

        reference = load_reference(args.percentiles, critic)
    cache = _open_cache(args)
    try:
        rows = critic.score(paths, batch_size=args.batch_size, cache=cache, workers=args.workers,
                            progress=not args.quiet, decode=args.decode, max_bytes=args.max_file_size,
                            **extra)
    except (KeyboardInterrupt, CacheError) as exc:
        _save_partial(args, exc, critic.extra_columns, cache is not None)
        raise
    finally:
        if cache is not None:
            cache.close()
    stats = rows.stats
    columns = tuple(critic.extra_columns)
    if reference is not None:
        ok = [r for r in rows if r.status == "ok"]
        for r, pct in zip(ok, reference.percentiles([r.score for r in ok])):
            r.percentile = round(float(pct), 1)
        columns += ("percentile",)
    _finish(args, rows, stats, columns)
    return EXIT_OK


def _score_ray(args) -> int:
    from .engine_ray import score_with_ray

    if not args.paths:
        raise UsageError("give image files, folders, lists of paths or .tar shards to score")
    if not args.output or Path(args.output).suffix.lower() in OUTPUT_FORMATS:
        raise UsageError("--engine ray writes a folder of Parquet shards: give --output DIR (no extension)")
    for flag, bad in (("--comments", args.comments), ("--table", args.table), ("--cache", args.cache),
                      ("--retrieve-from-inputs", args.retrieve_from_inputs)):
        if bad:
            raise UsageError(f"{flag} does not apply to --engine ray (its shards are its cache)")
    _check_paths(args.paths)
    got = score_with_ray(args.paths, args.output, args.model, recursive=args.recursive, address=args.ray_address,
                         shard_size=args.shard_size, batch_size=args.batch_size, actors=args.ray_actors,
                         actor_cpus=args.actor_cpus, actor_gpus=args.actor_gpus, device=args.device,
                         precision=args.precision, prompts=args.prompts, max_bytes=args.max_file_size,
                         quiet=args.quiet)
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(got["failures"].items()))
    print(f"photocritic: {got['total']} images in {got['shards']} shards, {got['scored']} scored, {got['failed']} "
          f"failed" + (f" ({kinds})" if kinds else "") + f"; {got['computed_shards']} shards computed "
          f"({got['computed']} images), {got['skipped_shards']} already complete -> {args.output}/manifest.json",
          file=sys.stderr)
    return EXIT_OK


def _check_paths(paths) -> None:
    for p in paths:
        if not os.path.lexists(p):
            raise UsageError(f"{p}: no such file or folder")


def _listed_images(paths, recursive: bool, extensions=None) -> list[str]:
    """The image files under ``paths`` (folders: files with one of
    ``extensions``, default the ones Pillow opens); none is a usage error."""
    from .data.images import list_images

    found = list_images(paths, recursive=recursive, extensions=extensions)
    if not found:
        raise UsageError("no image files found under " + ", ".join(paths)
                         + ("" if recursive else " (use --recursive to look in sub-folders)"))
    return found


def _read_comments_option(path):
    """``--comments PATH`` read, or None."""
    from .data.comments import load_comments_option

    return None if path is None else load_comments_option(path)


def _score_comments_only(args, critic, comments) -> int:
    """A comments-only model: inputs are ids (or files named <id>.EXT, never
    opened); no inputs: every id of the comments file."""
    from .data.comments import image_id

    ids = [image_id(p) for p in args.paths] if args.paths else sorted(comments)
    if args.output:
        check_output(args.output)
    cache = _open_cache(args)
    try:
        rows = critic.score(list(args.paths) or ids, ids=ids, comments=comments, cache=cache,
                            batch_size=args.batch_size, progress=not args.quiet)
    finally:
        if cache is not None:
            cache.close()
    _finish(args, rows, rows.stats, critic.extra_columns)
    return EXIT_OK


def _cmd_critique(args) -> int:
    """Generated critiques (a VILA-P model), or with --retrieve K the
    comments of the K nearest images of the model's comment bank."""
    from .data.comments import image_id
    from .features import EmbeddingCache

    _check_paths(args.paths)
    if args.retrieve is not None and args.pmi is not None:
        raise UsageError("--retrieve shows the comments of similar images; --pmi chooses among generated "
                         "critiques: give one of them")
    paths = _listed_images(args.paths, args.recursive)
    if args.retrieve is None:
        return _critique_generated(args, paths)
    if args.output and Path(args.output).suffix.lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"--output {args.output}: critique writes .jsonl")
    critic = _load(args)
    if critic.encoder_spec is None:
        raise UsageError(f"model {critic.name} has no image backbone: retrieval needs image embeddings")
    bank = critic.comment_bank
    pooled = critic.with_view("image.pooled")
    cache = _open_cache(args) or EmbeddingCache(None)
    try:
        rows, vecs = pooled.embed_paths(paths, cache, batch_size=args.batch_size, progress=not args.quiet,
                                        decode=args.decode, workers=args.workers, max_bytes=args.max_file_size)
    finally:
        cache.close()
    ok = [r for r in rows if r.status == "ok"]
    found = bank.retrieve(vecs, args.retrieve, query_ids=[image_id(r.path) for r in ok]) if ok else []
    records = []
    for r, got in zip(ok, found):
        rec = {"path": r.path, "retrieved": [{"id": src, "similarity": round(sim, 4),
                                              "comments": bank.comments[src]}
                                             for src, sim in zip(got.sources, got.similarities)]}
        records.append(rec)
        print(r.path)
        for k, item in enumerate(rec["retrieved"], 1):
            print(f"  {k}. {item['id']}  (similarity {item['similarity']:.3f})")
            for c in item["comments"]:
                text = " ".join(c.split())
                if args.max_chars and len(text) > args.max_chars:
                    text = text[:args.max_chars - 1] + "…"
                print(f"     - {text}")
        print()
    for r in rows:
        if r.status != "ok":
            print(f"not read: {r.status:<11} {r.error}")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"photocritic: {len(rows)} images, comments retrieved for {len(ok)} from a bank of {len(bank)} "
          f"({bank.index.backend} search), {len(rows) - len(ok)} not read", file=sys.stderr)
    return EXIT_OK


def _critique_generated(args, paths) -> int:
    from .captioning import check_captioner

    if args.output:
        check_output(args.output)
    pmi = _pmi_of(args)
    critic = _load(args)
    check_captioner(critic)
    try:
        rows = critic.critique(paths, max_tokens=args.max_tokens, beams=args.beams, batch_size=args.batch_size,
                               workers=args.workers, progress=not args.quiet, decode=args.decode,
                               max_bytes=args.max_file_size, pmi=pmi)
    except KeyboardInterrupt as exc:
        rows = getattr(exc, "partial_rows", None)
        if rows is not None and args.output:
            written = write_rows(rows, args.output, columns=["path", "critique", "status", "error"])
            exc.note = f"interrupted; the {len(rows)} rows (unfinished ones marked interrupted) are in {written}"
        raise
    written = write_rows(rows, args.output, columns=["path", "critique", "status", "error"]) if args.output else None
    for r in rows:
        if r.status == "ok":
            text = r.critique if not args.max_chars or len(r.critique) <= args.max_chars else \
                r.critique[:args.max_chars - 1] + "…"
            print(f"{r.path}\t{text}")
        else:
            print(f"{r.path}\t[{r.status}] {r.error}")
    failed = sum(r.status != "ok" for r in rows)
    print(f"photocritic: {len(rows)} images, {len(rows) - failed} critiqued, {failed} failed"
          + (f" -> {written}" if written else "") + _warning_note(), file=sys.stderr)
    return EXIT_OK


def _cmd_explain(args) -> int:
    from .explaining import columns, format_explanations, write_html

    _check_paths(args.paths)
    paths = _listed_images(args.paths, args.recursive)
    if args.output:
        check_output(args.output)
    critic = _load(args)
    try:
        rows = critic.explain(paths, batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
                              decode=args.decode, max_bytes=args.max_file_size, describe=not args.no_descriptions,
                              max_tokens=args.max_tokens)
    except KeyboardInterrupt as exc:
        rows = getattr(exc, "partial_rows", None)
        if rows is not None and args.output:
            written = write_rows(rows, args.output, columns=columns(rows[0].names if rows else ()))
            exc.note = f"interrupted; the {len(rows)} rows (unfinished ones marked interrupted) are in {written}"
        raise
    written = None
    if args.output:
        written = write_rows(rows, args.output, columns=columns(rows.names))
    if args.html:
        write_html(rows, args.html)
    print(format_explanations(rows, width=args.max_chars or 60))
    failed = sum(r.status != "ok" for r in rows)
    print(f"photocritic: {len(rows)} images, {len(rows) - failed} explained ({len(rows.names)} attributes, "
          f"descriptions: {rows.source or 'none'}), {failed} failed"
          + (f" -> {written}" if written else "") + (f", page {args.html}" if args.html else "")
          + _warning_note(), file=sys.stderr)
    return EXIT_OK


def _cmd_serve(args) -> int:
    from . import load
    from .serving import Limits, serve

    critic = load(args.model, device=args.device, precision=args.precision, prompts=args.prompts,
                  weights=args.weights)
    limits = Limits(max_upload_bytes=args.max_upload_size, max_pixels=args.max_pixels, max_files=args.max_files,
                    max_in_flight=args.max_in_flight, timeout_s=args.timeout)
    print(f"photocritic: serving {critic.name} on http://{args.host}:{args.port}/ (API: /docs); Ctrl-C stops",
          file=sys.stderr, flush=True)
    serve(critic, host=args.host, port=args.port, limits=limits, batch_size=args.batch_size,
          max_wait_ms=args.max_wait_ms, log_level=args.log_level)
    return EXIT_OK


def _cmd_cull(args) -> int:
    from dataclasses import fields

    from .culling import (RAW_EXTENSIONS, CullOptions, SidecarWriter, cull, move_rejects, sidecar_path, summary,
                          undo_moves, write_html)

    if args.undo:
        if args.paths:
            raise UsageError("--undo MANIFEST takes no photos")
        back, problems = undo_moves(args.undo)
        for p in problems:
            print(f"photocritic: {p}", file=sys.stderr)
        print(f"photocritic: {back} files moved back from {args.undo}" +
              (f"; {len(problems)} left (see above)" if problems else ""), file=sys.stderr)
        return EXIT_OK if not problems else EXIT_ERROR
    if not args.paths:
        raise UsageError("give folders or photos to cull (or --undo MANIFEST)")
    _check_paths(args.paths)
    if args.output:
        check_output(args.output)
    if args.move_rejects and Path(args.move_rejects).exists() and not Path(args.move_rejects).is_dir():
        raise UsageError(f"--move-rejects {args.move_rejects}: is a file, not a folder")
    writer = SidecarWriter() if args.xmp and not args.dry_run else None
    from .data.images import IMAGE_EXTENSIONS

    paths = _listed_images(args.paths, args.recursive, IMAGE_EXTENSIONS | RAW_EXTENSIONS)
    critic = _load(args)
    reference = None
    if args.percentiles:
        from .reference import load_reference

        reference = load_reference(args.percentiles, critic)
    opts = CullOptions(**{f.name: getattr(args, f.name) for f in fields(CullOptions)})  # one option per field
    cache = _open_cache(args)
    try:
        result = cull(critic, paths, opts, cache=cache, reference=reference, batch_size=args.batch_size,
                      progress=not args.quiet, max_bytes=args.max_file_size)
    finally:
        if cache is not None:
            cache.close()
    rows = result.rows
    from .culling import COLUMNS

    written = write_rows(rows, args.output, columns=COLUMNS) if args.output else None
    if args.html:
        write_html(result, args.html)
    if not args.output or args.dry_run:
        print(f"{'group':>5} {'rank':>4} {'score':>6} {'decision':<8} path")
        for r in sorted((r for r in rows if r.status == "ok"), key=lambda r: (r.group, r.rank)):
            print(f"{r.group:>5} {r.rank:>4} {r.score:6.2f} {r.decision:<8} {r.path}")
        for r in rows:
            if r.status != "ok":
                print(f"not read: {r.status:<11} {r.error}")
    done = []
    ok = [r for r in rows if r.status == "ok"]
    if args.xmp:
        made = {"created": 0, "updated": 0}
        for r in ok:
            side = sidecar_path(r.path, args.xmp_style)
            if args.dry_run:
                print(f"would write rating {r.rating} to {side}")
                continue
            try:
                made[writer.write(side, r.rating)] += 1
            except OSError as exc:
                print(f"photocritic: {exc}", file=sys.stderr)
        if writer is not None:
            writer.close()
            done.append(f"ratings: {made['created']} sidecars created, {made['updated']} updated ({args.xmp_style})")
    if args.move_rejects:
        rejects = [r.path for r in ok if r.decision == "reject"]
        if args.dry_run:
            for p in rejects:
                print(f"would move {p} to {args.move_rejects}")
        elif rejects:
            manifest = move_rejects(rejects, args.move_rejects)
            done.append(f"{len(rejects)} rejects moved to {args.move_rejects} (undo: photocritic cull --undo "
                        f"{manifest})")
    print(summary(result) + (f" -> {written}" if written else "") + (f", page {args.html}" if args.html else "")
          + "".join(f"; {d}" for d in done) + ("; dry run: no file was changed" if args.dry_run else "")
          + _warning_note(), file=sys.stderr)
    return EXIT_OK


def _cmd_compare(args) -> int:
    for p in (args.first, args.second):
        if not os.path.lexists(p):
            raise UsageError(f"{p}: no such file")
    critic = _load(args)
    rows = critic.score([args.first, args.second], batch_size=2, cache=_open_cache(args), max_bytes=args.max_file_size)
    for r in rows:
        if r.status != "ok":
            raise UsageError(f"cannot compare: {r.error} ({r.status})")
    a, b = rows
    out = {"a": a.path, "b": b.path, "score_a": round(a.score, 4), "score_b": round(b.score, 4),
           "better": "a" if a.score > b.score else ("b" if b.score > a.score else "tie"),
           "difference": round(abs(a.score - b.score), 4)}
    if args.percentiles:
        from .reference import load_reference

        pa, pb = load_reference(args.percentiles, critic).percentiles([a.score, b.score])
        out.update(percentile_a=round(float(pa), 1), percentile_b=round(float(pb), 1))
    if a.attributes and b.attributes:
        out["attributes"] = {k: {"a": round(a.attributes[k], 3), "b": round(b.attributes[k], 3),
                                 "better": "a" if a.attributes[k] > b.attributes[k] else
                                 ("b" if b.attributes[k] > a.attributes[k] else "tie")} for k in a.attributes}
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if out["better"] == "tie":
        print(f"{a.path} and {b.path} score the same ({a.score:.2f})")
    else:
        win, lose = (a, b) if out["better"] == "a" else (b, a)
        print(f"{win.path} is better: {win.score:.2f} against {lose.score:.2f} for {lose.path} "
              f"(+{out['difference']:.2f} points on 1-10)")
    if "percentile_a" in out:
        print(f"percentiles: {a.path} {out['percentile_a']:.0f}, {b.path} {out['percentile_b']:.0f}")
    for k, v in out.get("attributes", {}).items():
        print(f"  {k.replace('_', ' '):<20} {v['a']:5.2f}  {v['b']:5.2f}  "
              + ({"a": "A", "b": "B", "tie": "="}[v["better"]]))
    return EXIT_OK


def _cmd_export(args) -> int:
    import warnings as _w

    from . import load
    from .onnx_export import export_onnx

    if Path(args.output).suffix.lower() != ".onnx":
        raise UsageError(f"--output {args.output}: --format onnx writes an .onnx file")
    if str(args.model).lower().endswith(".onnx"):
        raise UsageError(f"--model {args.model} is already an ONNX file")
    critic = load(args.model, precision="fp32", prompts=args.prompts)
    with _w.catch_warnings():
        _w.filterwarnings("ignore", module=r"torch\.onnx.*")
        _w.filterwarnings("ignore", message=r".*(TracerWarning|Converting a tensor|traced|trace might not).*")
        import torch

        _w.filterwarnings("ignore", category=torch.jit.TracerWarning)
        meta = export_onnx(critic, args.output, opset=args.opset)
    size = Path(args.output).stat().st_size
    print(f"photocritic: {args.model} ({meta['method']} on {meta['encoder']}) -> {args.output} "
          f"({size / 1e6:.1f} MB, outputs: {', '.join(json.loads(meta['outputs']))}); feed it "
          f"{json.loads(meta['preprocess'])['crop'] or json.loads(meta['preprocess'])['resize']}px RGB uint8 "
          f"as its metadata says", file=sys.stderr)
    return EXIT_OK


def _cmd_report(args) -> int:
    from .report import write_report

    if Path(args.output).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--output {args.output}: report writes an .html page")
    got = write_report(args.results, args.output, title=args.title, thumb=args.thumbnail_size,
                       max_thumbnails=args.max_thumbnails)
    attrs = f", {len(got['attributes'])} attribute columns" if got["attributes"] else ""
    print(f"photocritic: {got['rows']} rows ({got['scored']} scored, {got['failed']} failed{attrs}) -> "
          f"{args.output} ({got['bytes'] / 1e6:.1f} MB)", file=sys.stderr)
    return EXIT_OK


def _score_embeddings(args) -> int:
    """Apply a model's head to precomputed embeddings (no image is read)."""
    from .data.embeddings import read_embeddings
    from .errors import DataError
    from .pipeline import RunStats, ScoreRow, fill_rows

    if args.paths:
        raise UsageError("give either image paths or --embeddings, not both")
    if args.output:
        check_output(args.output)
    critic = _load(args)
    if critic.head is None:
        raise UsageError(f"--embeddings needs a model with a trained head; {args.model} is zero-shot "
                         f"(its text side needs the backbone)")
    want = (critic.head.meta() or {}).get("dim")
    rows, stats = [], RunStats()
    for ids, emb in read_embeddings(args.embeddings):
        if want is not None and emb.shape[1] != want:
            raise DataError(f"--embeddings {args.embeddings}: {emb.shape[1]}-d embeddings, but model "
                            f"{args.model} expects {want}-d {critic.view} features "
                            f"({critic.encoder_spec.get('name', critic.encoder_spec['type'])})")
        chunk = [ScoreRow(path=key) for key in ids]
        fill_rows(chunk, critic.outputs_from_embeddings(emb))
        rows += chunk
    stats.total = stats.scored = stats.computed = len(rows)
    _finish(args, rows, stats, critic.extra_columns)
    return EXIT_OK


def _finish(args, rows, stats, extra) -> None:
    """Write --output (or its fallback), print the table, then the summary line."""
    stats.warnings = dict(_WARNINGS)
    written = None
    try:
        if args.output:
            written = write_rows(rows, args.output, extra)
        if args.table or not args.output:
            print(format_table(rows, extra))
            sys.stdout.flush()
    finally:
        print(stats.summary() + (f" -> {written}" if written else ""), file=sys.stderr)


def _save_partial(args, exc, extra, cached: bool) -> None:
    """After Ctrl-C or a cache failure mid-run: write the finished rows (the
    rest marked ``interrupted``) to --output, and say what happened."""
    rows = getattr(exc, "partial_rows", None)
    stats = getattr(exc, "partial_stats", None)
    if rows is None or not any(r.status not in ("pending", "interrupted") for r in rows):
        return
    where = ""
    if args.output:
        try:
            where = f"; the {len(rows)} rows ({stats.interrupted} marked interrupted) are in " \
                    f"{write_rows(rows, args.output, extra)}"
        except OutputError as err:
            where = f"; {err}"
    else:
        print(format_table(rows, extra))
    if isinstance(exc, KeyboardInterrupt):
        exc.note = ("interrupted" + (" (finished batches are in the cache)" if cached else "") + where)
    else:
        exc.args = (str(exc) + where,)
    stats.warnings = dict(_WARNINGS)
    print(stats.summary(), file=sys.stderr)


def _load(args):
    from . import load

    return load(args.model, device=args.device, precision=args.precision,
                prompts=getattr(args, "prompts", None), weights=args.weights)


def _open_cache(args, required: bool = False):
    """The cache the options name. With --no-cache: None, or (``required``,
    for commands that need embeddings back) an in-memory cache that writes
    nothing. With --cache-rebuild a damaged or foreign file is moved aside
    (never deleted) and a new cache started."""
    from .features import EmbeddingCache, default_cache_path, move_aside

    if args.no_cache:
        if args.cache_rebuild:
            raise UsageError("--cache-rebuild and --no-cache contradict each other")
        return EmbeddingCache(None) if required else None
    path = Path(args.cache or default_cache_path()).expanduser()
    if args.cache_rebuild and path.exists():
        try:
            with EmbeddingCache(path) as probe:
                probe.check()
            print(f"photocritic: the cache {path} is healthy; kept", file=sys.stderr)
        except CacheError as exc:
            if exc.kind != "damaged":
                raise
            moved = move_aside(path)
            print(f"photocritic: {exc.args[0].split(';')[0]}; moved it to {moved} and started a new "
                  f"cache", file=sys.stderr)
    return EmbeddingCache(path)


@contextlib.contextmanager
def _embedded_split(args, zero_shot: bool = False):
    """Load --dataset (and --split), embed its images through the pipeline
    and cache; yields (dataset, model, embeddings, indices of the scored
    images) with the cache attached for the model's text side."""
    from .data.datasets import load_dataset

    ds = load_dataset(args.dataset, images=args.images, label_scale=args.label_scale)
    if args.split:
        ds, _ = ds.split(args.split, seed=args.seed)
    if ds.root is None or not ds.on_1_to_10:
        raise UsageError(f"{args.command} needs images (--images) and labels on the 1-10 scale "
                         f"(for another scale say which with --label-scale)")
    critic = _load(args)
    if zero_shot and critic.prompts is None:
        raise UsageError(f"--model {args.model} is not a zero-shot (CLIP/SigLIP) model")
    cache = _open_cache(args, required=True)
    try:
        rows, emb = critic.embed_paths(ds.image_paths(), cache, batch_size=args.batch_size,
                                       progress=not args.quiet, decode=args.decode,
                                       workers=args.workers, max_bytes=args.max_file_size)
        ok = [i for i, r in enumerate(rows) if r.status == "ok"]
        if len(ok) < 3:
            raise UsageError(f"only {len(ok)} images of {ds.name} could be scored; need at least 3")
        critic.warm_text(cache)
        yield ds, critic, emb, ok
    finally:
        cache.close()


def _cmd_prompts_list(args) -> int:
    from .methods.prompt_search import adjective_lists
    from .methods.zeroshot import PromptSet, shipped_prompt_sets

    names = shipped_prompt_sets()
    width = max(map(len, names)) + 2
    for name in names:
        ps = PromptSet.load(name)
        print(f"{name:<{width}} {ps.rule:<13} {ps.description}")
    pos, neg = adjective_lists()
    print(f"\nprompt-search adjectives: {len(pos)} positive, {len(neg)} negative (WordNet)")
    return EXIT_OK


def _cmd_prompts_search(args) -> int:
    from .methods import prompt_search as S
    from .methods.zeroshot import imagenet_class_names

    try:
        S.check_template(args.template)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    context = "{class}" in args.template
    if args.classes is not None and not context:
        raise UsageError(f"--classes needs a template with {{class}}, not {args.template!r}")
    classes = classes_spec = None
    if context:
        classes_spec = args.classes or "imagenet"
        if classes_spec == "imagenet":
            classes = imagenet_class_names()
        else:
            from .data.ava import read_id_list

            classes = classes_spec = read_id_list(classes_spec)
            if not classes:
                raise UsageError(f"--classes {args.classes}: no class names in the file")
    pos, neg = S.adjective_lists()
    pos = [w.strip() for w in args.positive.split(",") if w.strip()] if args.positive else pos
    neg = [w.strip() for w in args.negative.split(",") if w.strip()] if args.negative else neg
    if not pos or not neg:
        raise UsageError("--positive and --negative need at least one adjective each")
    with _embedded_split(args, zero_shot=True) as (ds, critic, emb, ok):
        results = S.search(emb, ds.mean[ok], critic.text_embeddings, pos, neg, args.template,
                           args.task, classes)
    if args.all_pairs:
        S.save_results(results, args.all_pairs)
    metric = "srcc" if args.task == "continuous" else "accuracy"
    try:
        best = S.best_prompt_set(results, args.template, classes=classes_spec)
    except ValueError as exc:
        print(f"photocritic: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    best.save(args.output)
    for r in results[:10]:
        print(f"{r['positive']:>14} / {r['negative']:<14} {metric} {r[metric]:.4f}")
    print(f"photocritic: {len(results)} pairs on {len(ok)} images"
          + (f" x {len(classes)} classes" if classes else "")
          + f"; best saved to {args.output} (use it with --prompts {args.output})", file=sys.stderr)
    return EXIT_OK


def _cmd_calibrate(args) -> int:
    from . import metrics as M
    from .scoremap import ScoreMap

    with _embedded_split(args) as (ds, critic, emb, ok):
        raw = critic.raw_from_embeddings(emb)
    labels = ds.mean[ok]
    before = critic.score_map(raw)
    critic.score_map = ScoreMap.calibrate(raw, labels)
    after = critic.score_map(raw)
    critic.name = f"{critic.name} (calibrated on {ds.name})"
    critic.save(args.output)
    res = {"n": len(ok), "mse_before": M.mse(before, labels), "mse_after": M.mse(after, labels),
           "srcc": M.srcc(after, labels), "score_map": critic.score_map.to_dict()}
    print(json.dumps(res))
    print(f"photocritic: calibrated model saved to {args.output} (use --model {args.output})",
          file=sys.stderr)
    return EXIT_OK


def _cmd_styles(args) -> int:
    import csv as _csv

    from .data.ava import read_style_lists
    from .methods import styles as ST

    lists = read_style_lists(args.styles)
    critic = _load(args)
    if critic.prompts is None:
        raise UsageError(f"--model {args.model} is not a zero-shot (CLIP/SigLIP) model")
    templates = ST.VARIANTS[args.templates]
    root = Path(args.images)
    paths = [str(root / f"{i}.jpg") for i in lists.test_ids]
    present = [k for k, p in enumerate(paths) if Path(p).exists()]
    if len(present) < 2:
        raise UsageError(f"only {len(present)} of the {len(paths)} style test images are in {root}")
    cache = _open_cache(args, required=True)
    try:
        rows, emb = critic.embed_paths([paths[k] for k in present], cache, batch_size=args.batch_size,
                                       progress=not args.quiet, decode=args.decode, workers=args.workers,
                                       max_bytes=args.max_file_size)
        prompts = ST.style_prompts(lists.names, templates)
        text = critic.text_embeddings([t for group in prompts for t in group], cache=cache)
    finally:
        cache.close()
    ok = [present[k] for k, r in enumerate(rows) if r.status == "ok"]
    scores = ST.style_scores(emb, text, len(templates))
    res = ST.evaluate(lists.test_labels[ok], scores, lists.names)
    res.update(model=critic.name, templates=args.templates, prompts_per_style=templates, images_listed=len(paths), images_missing=len(paths) - len(present),
               images_failed=len(present) - len(ok))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "styles.json").write_text(json.dumps(res, indent=2) + "\n")
    with open(out / "style_scores.csv", "w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow(["image_id", *lists.names])
        for k, row in zip(ok, scores):
            w.writerow([lists.test_ids[k], *(f"{v:.6f}" for v in row)])
    print(json.dumps({"map": res["map"], "n": res["n"]}))
    return EXIT_OK


def _cmd_eval(args) -> int:
    from .data.datasets import load_dataset
    from .evaluation import evaluate

    ds = load_dataset(args.dataset, images=args.images, label_scale=args.label_scale)
    info = None
    if args.split:
        ds, info = ds.split(args.split, seed=args.seed)
    if len(ds) < 1:
        raise UsageError(f"dataset {args.dataset}"
                         + (f" split {args.split}" if args.split else "") + " has no labelled images")
    critic = _load(args)
    comments = _read_comments_option(args.comments)
    if args.task == "captions":
        return _eval_captions(args, critic, ds, info, comments)
    cache = _open_cache(args)
    try:
        res = evaluate(critic, ds, args.output, info, cache=cache, batch_size=args.batch_size,
                       progress=not args.quiet, n_boot=args.bootstrap, decode=args.decode,
                       seed=args.seed, workers=args.workers, comments=comments,
                       attribute_labels=_attribute_labels_option(args.attribute_labels))
    finally:
        if cache is not None:
            cache.close()
    keys = [k for k in ("n", "srcc", "plcc", "accuracy", "emd") if k in res]
    if res.get("attributes"):
        print(json.dumps({a: {"srcc": m["srcc"], "n": m["n"]} for a, m in res["attributes"].items()}))
    print(json.dumps({k: res[k] for k in keys}))
    print(f"photocritic: evaluated {res['n']} images ({res['images_missing']} missing, "
          f"{res['images_failed']} failed) -> {args.output}" + _warning_note(), file=sys.stderr)
    return EXIT_OK


def _attribute_labels_option(path):
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--attribute-labels {p}: no such file")
    return p


def _eval_captions(args, critic, ds, info, comments) -> int:
    from .captioning import evaluate_captions

    if comments is None:
        raise UsageError("--task captions compares generated critiques with reference comments: pass --comments PATH")
    res = evaluate_captions(critic, ds, comments, args.output, max_tokens=args.max_tokens, beams=args.beams,
                            batch_size=args.batch_size, progress=not args.quiet, decode=args.decode,
                            workers=args.workers, split_info=info, pmi=_pmi_of(args))
    keys = [k for k in ("n", "bleu1", "bleu4", "rouge_l", "cider") if k in res]
    print(json.dumps({k: res[k] for k in keys}))
    print(f"photocritic: critiqued {res['n']} images ({res['images_missing']} missing, {res['images_failed']} "
          f"failed) -> {args.output}" + _warning_note(), file=sys.stderr)
    return EXIT_OK


def _cmd_data_summary(args) -> int:
    from .data.datasets import load_dataset, summary

    ds = load_dataset(args.spec, images=args.images, comments=args.comments, label_scale=args.label_scale)
    print(json.dumps(summary(ds), indent=2))
    return EXIT_OK


def _cmd_train(args) -> int:
    from .training.run import train

    params = {}
    for item in args.param or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--param {item}: use NAME=VALUE")
        params[key.replace("-", "_")] = _param_value(value)
    if args.no_anchor:
        params["anchor"] = "learned"
    if args.no_residual:
        params["residual"] = False
    if args.train_on_retrieved:
        params["train_on_retrieved"] = True
    if args.ridge is not None:
        params["ridge"] = args.ridge if args.ridge == "auto" else float(args.ridge)
    options = {k: getattr(args, k) for k in ("method", "backbone", "dataset", "split", "val_split", "images",
                                             "label_scale", "output", "epochs", "batch_size", "lr",
                                             "seed", "device", "precision", "resume", "overwrite",
                                             "cache", "no_cache", "workers", "quiet", "group_by", "name",
                                             "description", "half", "comments", "inputs", "text_encoder",
                                             "retrieve_comments", "attribute_labels", "attribute_names",
                                             "engine", "ray_address")}
    options["params"] = params
    train(options, args.config)
    return EXIT_OK


def _cmd_pretrain(args) -> int:
    from .methods.zeroshot import PromptSet
    from .training.pretrain import PretrainConfig, pretrain

    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction}: give a share in [0, 1)")
    PromptSet.load(args.prompts)  # a clear error before any training
    fields = set(PretrainConfig.__dataclass_fields__)
    cfg = PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    pretrain(cfg, log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
    return EXIT_OK


def _cmd_pretrain_multiattr(args) -> int:
    from .training.multiattr import MultiAttrConfig, pretrain_multiattr

    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction}: give a share in [0, 1)")
    fields = set(MultiAttrConfig.__dataclass_fields__)
    cfg = MultiAttrConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    pretrain_multiattr(cfg, log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
    return EXIT_OK


def _param_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _cmd_data_synth(args) -> int:
    from .data.synthetic import find_sources, synthesize
    from .pipeline import _progress

    sources = find_sources(args.sources)
    if args.exclude:
        drop = {x.strip() for x in args.exclude.split(",") if x.strip()}
        unknown = drop - {s.name for s in sources}
        if unknown:
            raise UsageError(f"--exclude: no source photo named {', '.join(sorted(unknown))}")
        sources = [s for s in sources if s.name not in drop]
    bar = _progress(args.n, not args.quiet, desc="synthesising")
    try:
        res = synthesize(args.output, args.n, seed=args.seed, sources=sources,
                         min_sources=args.min_sources, progress=bar.update)
    finally:
        bar.close()
    print(json.dumps(res))
    return EXIT_OK


def _cmd_models(args) -> int:
    from .zoo import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<16} {preset['summary']}")
    return EXIT_OK


# -- option parsing ------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (where it has one) after its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default:" in text or default in (None, False, argparse.SUPPRESS) \
                or action.option_strings == [] or isinstance(action, argparse._HelpAction):
            return text
        return text + " (default: %(default)s)"


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: give a size in MB, 0 or more")
    return value


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the smallest allowed value, {low}")
        return value
    return parse


def _add_pmi_options(p) -> None:
    g = p.add_argument_group("mutual-information decoding (VILA-P critiques)")
    g.add_argument("--pmi", type=_int_at_least(1), metavar="K",
                   help="draw K critiques per image (nucleus sampling) besides the greedy one and keep the one "
                        "with the highest log p(critique | image) - W * log p(critique), p(critique) averaged over "
                        "reference images: critiques about this image rather than what the model says of any "
                        "image. Costs about (K + 1) x (R + 1) decoder passes per image (R reference images, "
                        "32 by default)")
    g.add_argument("--pmi-weight", type=float, default=1.0, metavar="W", help="W above (0: the likeliest)")
    g.add_argument("--pmi-reference", nargs="+", metavar="PATH",
                   help="reference images (files or folders) for p(critique); default: the ones saved with "
                        "the model at pretraining")
    g.add_argument("--pmi-seed", type=int, default=0, help="seeds the samples (with each image's pixels)")
    g.add_argument("--pmi-top-p", type=float, default=0.95, help="nucleus size of the samples")
    g.add_argument("--pmi-temperature", type=float, default=1.0, help="temperature of the samples")


def _pmi_of(args):
    from .captioning import MutualInformation

    if args.pmi is None:
        if args.pmi_reference:
            raise UsageError("--pmi-reference goes with --pmi K")
        return None
    return MutualInformation(samples=args.pmi, weight=args.pmi_weight, reference=args.pmi_reference,
                             seed=args.pmi_seed, temperature=args.pmi_temperature, top_p=args.pmi_top_p)


def _device(text: str) -> str:
    from .device import validate_device

    try:
        return validate_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2,
          "mib": 1024 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3}


def _size(text: str) -> int:
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500MB, 2GiB or a number of bytes)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be at least 1 byte")
    return value


def _label_scale(text: str) -> str:
    from .data.datasets import parse_scale

    try:
        parse_scale(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH, e.g. 0-100 or 1-5") from None
    return text


def _add_run_options(p: argparse.ArgumentParser, model_default: str | None = "lite",
                     prompts: bool = True, model_help: str | None = None) -> None:
    """Options shared by every command that scores images."""
    if model_default is None:
        p.add_argument("--model", required=True, help=model_help or
                       "a zero-shot model: CLIP/SigLIP preset, hub id or directory")
    else:
        p.add_argument("--model", default=model_default,
                       help="preset name, model directory, or CLIP/SigLIP hub id/directory")
    if prompts:
        p.add_argument("--prompts", help="zero-shot prompt set: a shipped name (see `photocritic "
                                         "prompts list`) or a JSON file (default: the model's own)")
    p.add_argument("--weights", help="local directory of a zero-shot preset's weights "
                                     "(default: the Hugging Face cache)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32, help="images per batch")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the hardware does bf16 natively (CUDA with bf16, "
                        "CPUs with AVX-512-BF16 or AMX), fp32 otherwise")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cache", help="embedding cache file (default: $PHOTOCRITIC_CACHE, else "
                                   "embeddings.sqlite in the user cache directory)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write any cache file")
    p.add_argument("--cache-rebuild", action="store_true",
                   help="if the cache file is damaged or not a photocritic cache, move it aside "
                        "(to NAME.damaged-TIME; nothing is deleted) and start a new one")
    p.add_argument("--decode", choices=["auto", "threads", "workers"], default="auto",
                   help="decode in worker processes overlapped with the model, or in threads "
                        "between batches (auto: workers for cuda, threads for cpu)")
    p.add_argument("--workers", type=_int_at_least(0), default=None,
                   help="decoding processes (default: half the cores, 1 to 4; 0: in the main "
                        "process) or threads (default: all cores)")
    p.add_argument("--max-file-size", type=_size, default="1GiB",
                   help="files larger than this are not read (status too_large)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress (a bar on a terminal, plain lines otherwise)")


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that reads a labelled split."""
    p.add_argument("--dataset", required=True, help="dataset SPEC: an AVA folder or label file, "
                                                    "or a labels .csv/.jsonl (or a folder holding one)")
    p.add_argument("--split", help="split name (a list in the dataset, hentschel-train/-test, a "
                                   "split column value, or train/val/test of a seeded random "
                                   "split) or a file of image ids (default: every labelled image)")
    p.add_argument("--images", help="folder the images are in (default: beside the labels, or "
                                    "an AVA folder's images/)")
    p.add_argument("--label-scale", type=_label_scale, metavar="LOW-HIGH",
                   help="scale of mean/MOS labels, mapped to 1-10 (e.g. 0-100, 1-5; "
                        "default: mean labels must be on 1-10)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random split and of the bootstrap")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    def sub_parser(name, **kw):
        return sub.add_parser(name, formatter_class=_Formatter, **kw)

    ap = argparse.ArgumentParser(prog="photocritic", formatter_class=_Formatter,
                                 description="Judge the aesthetics of images with vision-language "
                                             "models.",
                                 epilog="exit codes: 0 done (also when some files were bad), 1 error "
                                        "(output, cache, I/O), 2 usage, 3 model weights not "
                                        "available offline, 130 interrupted")
    ap.add_argument("--version", action="version", version=f"photocritic {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    sc = sub_parser("score", help="score images or folders of images (1-10)",
                    description="Score images. Bad files get a status and a message; "
                                "all other files are scored.")
    sc.add_argument("paths", nargs="*", help="image files and/or folders")
    sc.add_argument("--embeddings", metavar="FILE",
                    help="score precomputed embeddings instead of images: a .npy (N, D) array (rows "
                         "keyed by index) or a Parquet file with an embedding column and an id/key/"
                         "path column, as img2dataset and clip-retrieval write them")
    sc.add_argument("--output", "-o", help="write rows to FILE (.csv, .jsonl or .parquet) "
                                           "(default: print a ranked table)")
    sc.add_argument("--table", action="store_true",
                    help="print the ranked table on stdout, also when writing --output")
    sc.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    sc.add_argument("--comments", metavar="PATH",
                    help="user comments, for models that read them (mmlq): an image's id is its file "
                         "name without extension; a comments-only model takes ids (none: every id "
                         "in PATH) and opens no image")
    sc.add_argument("--retrieve-from-inputs", action="store_true",
                    help="mmlq --retrieve-comments models: an image without comments also retrieves from "
                         "the images scored here that have comments (other frames of a shoot, say)")
    sc.add_argument("--percentiles", metavar="REF",
                    help="add a percentile column: each score against REF, 'default' (the model's shipped "
                         "reference; lite has one), a reference JSON or a results file of scores")
    sc.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local: this process; ray: Ray Data (decoding in tasks, the model in an actor pool), "
                         "--output is then a folder of Parquet shards plus manifest.json, and a re-run computes "
                         "only the shards not yet written. Inputs may also be .txt/.csv/.parquet lists of "
                         "paths and WebDataset .tar shards")
    sc.add_argument("--ray-address", metavar="ADDR", help="--engine ray: an existing cluster (default: an "
                                                          "embedded local Ray)")
    sc.add_argument("--shard-size", type=_int_at_least(1), default=1024,
                    help="--engine ray: images per output shard (the unit a re-run skips)")
    sc.add_argument("--ray-actors", type=_int_at_least(1), default=1, help="--engine ray: model actors")
    sc.add_argument("--actor-cpus", type=float, default=0.5,
                    help="--engine ray: CPUs each model actor asks Ray for (fractions leave room for the "
                         "decoding tasks; the actor's torch uses the node's cores)")
    sc.add_argument("--actor-gpus", type=float, default=0.0, help="--engine ray: GPUs per model actor")
    _add_run_options(sc)
    sc.set_defaults(func=_cmd_score)

    ev = sub_parser("eval", help="evaluate a model on a labelled data set",
                    description="Score a labelled split through the normal pipeline (cache "
                                "included) and write metrics.json, predictions.csv, report.md "
                                "and plots to --output.")
    _add_dataset_options(ev)
    ev.add_argument("--output", "-o", required=True, help="folder for the report")
    ev.add_argument("--comments", metavar="PATH", help="user comments, for models that read them (mmlq); "
                                                       "with --task captions, the reference comments")
    ev.add_argument("--attribute-labels", metavar="PATH",
                    help="a model with attribute scores (train attributes, pretrain multiattr): per-image "
                         "attribute scores (as train's); SRCC and PLCC per attribute in the report")
    ev.add_argument("--task", choices=["scores", "captions"], default="scores",
                    help="scores: predicted scores against the labels; captions: generated critiques "
                         "(VILA-P) against the reference comments (BLEU-1..4, ROUGE-L, CIDEr-D)")
    ev.add_argument("--max-tokens", type=_int_at_least(1), default=64, help="--task captions: longest critique")
    ev.add_argument("--beams", type=_int_at_least(1), default=1, help="--task captions: beam width (1: greedy)")
    _add_pmi_options(ev)
    ev.add_argument("--bootstrap", type=_int_at_least(0), default=1000,
                    help="bootstrap resamples for the 95%% CIs (0: none)")
    _add_run_options(ev)
    ev.set_defaults(func=_cmd_eval)

    ex = sub_parser("explain", help="per-attribute scores and descriptions of each image, plus the overall score",
                    description="Per attribute (composition, lighting, colour, ...) a score from 1 to 10 and "
                                "the best-matching description, plus the overall score. Attribute scores come "
                                "from a model trained with `train attributes`, a `pretrain multiattr` model, or "
                                "zero-shot good/bad prompts in a CLIP/SigLIP/VILA-P space; descriptions are "
                                "retrieved from a multi-attribute model's training descriptions, or generated by "
                                "a VILA-P model. Prints a table; --output writes .csv/.jsonl/.parquet with a "
                                "column per attribute, --html a page with each photo and its attribute bars.")
    ex.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    ex.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    ex.add_argument("--output", "-o", help="also write the rows to FILE (.csv, .jsonl or .parquet): path, score, "
                                           "one column per attribute and per attribute's description, status, error")
    ex.add_argument("--html", metavar="FILE", help="also write a page with each photo, its bars and descriptions")
    ex.add_argument("--no-descriptions", action="store_true", help="scores only (no retrieval or generation)")
    ex.add_argument("--max-tokens", type=_int_at_least(1), default=24,
                    help="length of a generated description (VILA-P), its prefix included")
    ex.add_argument("--max-chars", type=_int_at_least(0), default=60,
                    help="shorten descriptions on the terminal to this many characters (0: no limit)")
    _add_run_options(ex, model_default=None, prompts=False,
                     model_help="a model with attribute scores (train attributes, pretrain multiattr) or a "
                                "CLIP/SigLIP/VILA-P model (zero-shot attribute prompts)")
    ex.set_defaults(func=_cmd_explain)

    cr = sub_parser("critique", help="write an aesthetic critique of each image (VILA-P), or show the "
                                     "comments of the most similar images",
                    description="With a VILA-P model (photocritic pretrain vila-p): a generated critique "
                                "per image (greedy, or beam search with --beams), printed and written to "
                                "--output (.csv, .jsonl or .parquet: path, critique, status, error). With "
                                "--retrieve K and a model trained with --retrieve-comments: the comments of "
                                "each image's K nearest images in its comment bank, with their ids and "
                                "cosine similarities.")
    cr.add_argument("paths", nargs="+", help="image files and/or folders")
    cr.add_argument("--retrieve", type=_int_at_least(1), metavar="K",
                    help="show the comments of the K most similar images instead of generating")
    cr.add_argument("--max-tokens", type=_int_at_least(1), default=64,
                    help="longest critique, in tokens (the model's limit is 63)")
    cr.add_argument("--beams", type=_int_at_least(1), default=1, help="beam search width (1: greedy)")
    _add_pmi_options(cr)
    cr.add_argument("--output", "-o", help="also write them to FILE (.csv, .jsonl or .parquet; "
                                           "retrieved comments: .jsonl)")
    cr.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    cr.add_argument("--max-chars", type=_int_at_least(0), default=300,
                    help="cut each printed comment to this many characters (0: whole)")
    _add_run_options(cr, model_default=None, prompts=False)
    cr.set_defaults(func=_cmd_critique)

    cu = sub_parser("cull", help="group bursts and near-duplicates, pick the best of each, rate and move rejects",
                    description="Score photos, group bursts and near-duplicates (embedding similarity and EXIF "
                                "capture time; --phash for re-encoded copies), rank each group by score (near-ties "
                                "by sharpness): the best is keep, the others similar, photos below --reject-below "
                                "reject. Writes --output rows, --html a contact sheet, --xmp star ratings into "
                                "sidecars (merged, never overwritten), --move-rejects moves rejects with a manifest "
                                "(--undo MANIFEST puts them back). Nothing is ever deleted.")
    cu.add_argument("paths", nargs="*", metavar="DIR", help="folders and/or photos (RAW files read through their "
                                                           "embedded JPEG preview)")
    cu.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    cu.add_argument("--output", "-o", help="rows to FILE (.csv, .jsonl or .parquet): path, group, rank, score, "
                                           "percentile, decision, rating, capture_time, sharpness, status, error")
    cu.add_argument("--html", metavar="FILE", help="a contact sheet of the groups, the pick of each highlighted")
    cu.add_argument("--xmp", action="store_true", help="write xmp:Rating into sidecars: 1-5 stars by score quintile "
                                                       "within the run, -1 for rejects (needs exiftool)")
    cu.add_argument("--xmp-style", choices=["darktable", "lightroom"], default="darktable",
                    help="sidecar names: darktable photo.jpg.xmp, Lightroom photo.xmp")
    cu.add_argument("--move-rejects", metavar="DIR", help="move rejected photos (and their sidecars) to DIR, with "
                                                          "a manifest there for --undo")
    cu.add_argument("--undo", metavar="MANIFEST", help="put back the files a --move-rejects run moved")
    cu.add_argument("--dry-run", action="store_true", help="write no sidecar and move nothing; print what would "
                                                           "happen (--output and --html are still written)")
    cu.add_argument("--percentiles", metavar="REF", help="also give each score as a percentile of REF: 'default' "
                                                          "(the model's shipped reference), a reference JSON or a "
                                                          "results file")
    cu.add_argument("--similarity", type=float, default=0.2,
                    help="cosine of centred embeddings that links two photos taken within --burst-gap")
    cu.add_argument("--burst-gap", type=float, default=5.0, help="seconds between photos of one burst")
    cu.add_argument("--similarity-without-time", type=float, default=0.8,
                    help="cosine that links photos without an EXIF capture time")
    cu.add_argument("--phash", action="store_true", help="also link perceptual-hash near-duplicates, whatever "
                                                         "their times (exact and re-encoded copies)")
    cu.add_argument("--phash-distance", type=_int_at_least(0), default=6, help="most differing hash bits")
    cu.add_argument("--reject-below", type=float, default=4.0, help="photos scoring below this are rejected")
    cu.add_argument("--tie", type=float, default=0.05, help="scores this close are a tie, broken by sharpness")
    _add_run_options(cu)
    cu.set_defaults(func=_cmd_cull)

    cp = sub_parser("compare", help="which of two photos is better, by how much, and per attribute",
                    description="Score two photos with one model and say which is better, by how many points "
                                "(and percentiles, with --percentiles), and per attribute where the model has "
                                "attribute scores.")
    cp.add_argument("first", metavar="A", help="a photo")
    cp.add_argument("second", metavar="B", help="another photo")
    cp.add_argument("--percentiles", metavar="REF", help="as for cull")
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _add_run_options(cp)
    cp.set_defaults(func=_cmd_compare)

    sv = sub_parser("serve", help="serve a model over HTTP, with a web page to drop photos on",
                    description="POST /score, /explain and /critique (multipart uploads in the field 'files'; "
                                "JSON rows as the CLI writes them), GET /models, /healthz, /docs (the API) and "
                                "/ (a page: drop photos, see them ranked with their scores, distributions, "
                                "attribute bars and critiques). Concurrent requests are batched. Over-limit or "
                                "malformed uploads get a 4xx with a JSON error.")
    sv.add_argument("--model", "-m", default="lite", help="preset, model directory, CLIP/SigLIP model or .onnx file")
    sv.add_argument("--prompts", help="zero-shot models: the prompt set (name or JSON file)")
    sv.add_argument("--weights", help="local directory of a zero-shot preset's weights")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=_int_at_least(0), default=8000, help="port to listen on")
    sv.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N or mps")
    sv.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="as for score")
    sv.add_argument("--batch-size", type=_int_at_least(1), default=32, help="largest batch gathered from requests")
    sv.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="longest a request waits for others to fill its batch")
    sv.add_argument("--max-upload-size", type=_size, default="32MiB", help="largest file accepted (413 above)")
    sv.add_argument("--max-pixels", type=_int_at_least(1), default=64_000_000,
                    help="largest image accepted, in pixels (413 above; read before decoding)")
    sv.add_argument("--max-files", type=_int_at_least(1), default=64, help="most files in one request (413 above)")
    sv.add_argument("--max-in-flight", type=_int_at_least(1), default=64,
                    help="most requests handled at once (429 above)")
    sv.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take (503 above)")
    sv.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info",
                    help="uvicorn's log level (info logs each request)")
    sv.set_defaults(func=_cmd_serve)

    xp = sub_parser("export", help="write a model as one ONNX graph (image tower + method + score map)",
                    description="Export a model for other runtimes: uint8 RGB pixels (N, H, W, 3), resized and "
                                "centre-cropped as the file's metadata says (photocritic.preprocess), in; the "
                                "1-10 score (and the 10-bin distribution for distribution methods) out. "
                                "`photocritic score --model FILE.onnx` runs it with onnxruntime. Methods that "
                                "read comments or give per-attribute scores are refused (exit 2).")
    xp.add_argument("--model", "-m", required=True, help="a preset, model directory or CLIP/SigLIP directory")
    xp.add_argument("--format", choices=["onnx"], default="onnx", help="the export format")
    xp.add_argument("--output", "-o", required=True, help="the file to write (.onnx)")
    xp.add_argument("--prompts", help="zero-shot models: the prompt set (name or JSON file)")
    xp.add_argument("--opset", type=_int_at_least(13), default=17, help="the ONNX opset")
    xp.set_defaults(func=_cmd_export)

    rp = sub_parser("report", help="a self-contained HTML page from a results file",
                    description="One HTML file with no outside references: a contact sheet of thumbnails "
                                "sorted by score, a histogram of the scores, per-attribute bars where the "
                                "results have attribute columns, and the failed files with their reasons. "
                                "Reads what score or explain wrote (.csv, .jsonl or .parquet).")
    rp.add_argument("results", help="a results file (.csv, .jsonl or .parquet)")
    rp.add_argument("--output", "-o", required=True, help="the page to write (.html)")
    rp.add_argument("--title", help="the page's title (default: from the file name)")
    rp.add_argument("--thumbnail-size", type=_int_at_least(16), default=200, help="longest side of a thumbnail, px")
    rp.add_argument("--max-thumbnails", type=_int_at_least(0), default=1000,
                    help="thumbnails for the best N files; the rest are listed in a table")
    rp.set_defaults(func=_cmd_report)

    dt = sub_parser("data", help="inspect data sets")
    dsub = dt.add_subparsers(dest="data_command", required=True)
    sy = dsub.add_parser("synth", help="write a synthetic aesthetic world with known ground truth",
                         formatter_class=_Formatter)
    sy.add_argument("--n", type=_int_at_least(1), required=True, help="number of images")
    sy.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes")
    sy.add_argument("--output", required=True, help="folder to write images/, labels.csv, comments.json")
    sy.add_argument("--sources", help="a folder of source photos (default: Debian's wallpaper photos "
                                      "and scikit-image's)")
    sy.add_argument("--min-sources", type=_int_at_least(1), default=30, help="fewest source photos accepted")
    sy.add_argument("--exclude", metavar="NAMES", help="comma-separated source photos to leave out (names "
                                                         "as world.json lists them, e.g. skimage-astronaut)")
    sy.add_argument("--quiet", "-q", action="store_true", help="no progress")
    sy.set_defaults(func=_cmd_data_synth)
    su = dsub.add_parser("summary", help="print a JSON summary of a data set", formatter_class=_Formatter)
    su.add_argument("spec", help="dataset SPEC (see `photocritic eval --help`)")
    su.add_argument("--images", help="folder the images are in (reports how many are missing)")
    su.add_argument("--comments", help="comments: a folder of .txt files, .json or .jsonl")
    su.add_argument("--label-scale", type=_label_scale, metavar="LOW-HIGH",
                    help="scale of mean/MOS labels, mapped to 1-10 (e.g. 0-100, 1-5)")
    su.set_defaults(func=_cmd_data_summary)

    pr = sub_parser("prompts", help="zero-shot prompt sets")
    psub = pr.add_subparsers(dest="prompts_command", required=True)
    pl = psub.add_parser("list", help="list the shipped prompt sets", formatter_class=_Formatter)
    pl.set_defaults(func=_cmd_prompts_list)
    ps = psub.add_parser("search", help="find the best adjective pair on a labelled split",
                         formatter_class=_Formatter,
                         description="Try every positive x negative adjective pair (default: the "
                                     "27 x 12 WordNet lists) in --template on a labelled split and "
                                     "save the best as a prompt set. A template with {class} runs "
                                     "the context-aware search over the 1,000 ImageNet classes.")
    _add_dataset_options(ps)
    ps.add_argument("--task", choices=["continuous", "binary"], default="continuous",
                    help="rank pairs by SRCC of the weighted sum, or by binary accuracy (the "
                         "label of the most similar prompt against label > 5)")
    ps.add_argument("--template", default="a {label} picture",
                    help="prompt with {label} (and optionally {class}, e.g. "
                         "'a {label} picture, of a #{class}')")
    ps.add_argument("--classes", help="with {class}: 'imagenet' or a file of class names, one per "
                                      "line (default: imagenet)")
    ps.add_argument("--positive", help="comma-separated positive adjectives (default: WordNet list)")
    ps.add_argument("--negative", help="comma-separated negative adjectives (default: WordNet list)")
    ps.add_argument("--output", "-o", required=True, help="JSON file for the winning prompt set")
    ps.add_argument("--all-pairs", metavar="CSV", help="also write every pair's score to this CSV")
    _add_run_options(ps, prompts=False)
    ps.set_defaults(func=_cmd_prompts_search)

    ca = sub_parser("calibrate", help="fit a model's 1-10 map to labelled data; save the model",
                    description="Fit the monotone logistic map from a model's raw output to "
                                "the labels (least squares) and save the model with it as a "
                                "directory that --model accepts. Rankings do not change.")
    _add_dataset_options(ca)
    ca.add_argument("--output", "-o", required=True, help="folder for the calibrated model")
    _add_run_options(ca)
    ca.set_defaults(func=_cmd_calibrate)

    st = sub_parser("styles", help="zero-shot AVA style classification, evaluated by mAP")
    st.add_argument("--styles", required=True, help="AVA style_image_lists folder")
    st.add_argument("--images", required=True, help="folder holding <id>.jpg of the test list")
    st.add_argument("--output", "-o", required=True, help="folder for styles.json and style_scores.csv")
    st.add_argument("--templates", choices=["single", "ensemble"], default="ensemble",
                    help="one prompt per style, or four averaged (a prompt ensemble)")
    _add_run_options(st, model_default=None, prompts=False)
    st.set_defaults(func=_cmd_styles)

    tr = sub_parser("train", help="train a method on labelled images; writes a model directory",
                    description="Train METHOD on --dataset and write a model directory (config.json, "
                                "model.safetensors), metrics.json, training.png and the resolved "
                                "config to --output. Every option can come from --config FILE.")
    from .registry import method_names

    tr.add_argument("method", nargs="?", choices=method_names(), help="the method to train")
    tr.add_argument("--backbone", help="efficientnet-lite0, clip-vit-b-32, clip-vit-b-16, clip-vit-l-14, "
                                       "siglip-b-16, a CLIP/SigLIP directory or a hub id")
    tr.add_argument("--dataset", help="dataset SPEC (as for eval)")
    tr.add_argument("--split", help="training split (default: every labelled image)")
    tr.add_argument("--val-split", help="validation split (default: a seeded 10%% of the training "
                                        "split, by image id)")
    tr.add_argument("--images", help="folder the images are in")
    tr.add_argument("--label-scale", type=_label_scale, metavar="LOW-HIGH", help="scale of mean/MOS labels")
    tr.add_argument("--output", help="folder for the model (must be empty, or --overwrite)")
    tr.add_argument("--config", help="a YAML or JSON file of options (the command line wins)")
    tr.add_argument("--epochs", type=_int_at_least(1), help="epochs (default: the method's)")
    tr.add_argument("--batch-size", type=_int_at_least(1), help="batch size (default: the method's)")
    tr.add_argument("--lr", type=float, help="learning rate (default: the method's)")
    tr.add_argument("--seed", type=int, help="seed of the split, the initialisation and the batches")
    tr.add_argument("--device", type=_device, help="cpu, cuda, cuda:N or mps")
    tr.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="feature extraction precision")
    tr.add_argument("--resume", action="store_true", help="continue a fine-tune from its last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="replace what --output holds")
    tr.add_argument("--ridge", help="linear: ridge penalty alpha, or 'auto' (chosen on validation)")
    tr.add_argument("--no-anchor", action="store_true", help="vila-r: learn the anchor w_p")
    tr.add_argument("--no-residual", action="store_true", help="vila-r: v~ = normalize(v H), no + v")
    tr.add_argument("--group-by", metavar="COLUMN", help="a column of a labels .csv naming groups (e.g. "
                                                         "source): vila-r ranks pairs only within a group; "
                                                         "mmlq --retrieve-comments retrieves only from "
                                                         "other groups")
    tr.add_argument("--comments", help="mmlq: user comments (DPC-style .json, Karpathy-style .json, "
                                       ".jsonl, or a folder of <id>.txt)")
    tr.add_argument("--inputs", choices=["image+comments", "image", "comments"],
                    help="mmlq: what the queries read (default image+comments; comments needs no "
                         "--backbone and opens no image)")
    tr.add_argument("--text-encoder", help="mmlq: minilm (default), mpnet (the mpnet extra), a directory "
                                           "or a hub id")
    tr.add_argument("--retrieve-comments", type=int, metavar="K",
                    help="mmlq: an image without comments gets those of its K nearest training images "
                         "(image embeddings of --backbone); the bank is kept in the model for scoring")
    tr.add_argument("--train-on-retrieved", action="store_true",
                    help="mmlq --retrieve-comments: every training image reads retrieved comments (its own go "
                         "into the bank only), as images without comments are scored; use with --group-by")
    tr.add_argument("--attribute-labels", metavar="PATH",
                    help="attributes: per-image attribute scores (1-10): a .csv with an id/path column and one "
                         "column per attribute (the synthetic world's labels.csv), or {id: {attribute: score}} "
                         ".json/.jsonl")
    tr.add_argument("--attribute-names", metavar="A,B,...",
                    help="attributes: which columns are attributes (default: those of composition, "
                         "depth_of_field, lighting, colour, technical_quality, content, emotion present)")
    tr.add_argument("--name", help="the model's name in its config.json (default: the --output folder's)")
    tr.add_argument("--description", help="the model's description in its config.json")
    tr.add_argument("--half", action="store_true", default=None,
                    help="store the head's weights in fp16 (half the size)")
    tr.add_argument("--param", action="append", metavar="NAME=VALUE",
                    help="any other method parameter (repeatable)")
    g = tr.add_mutually_exclusive_group()
    g.add_argument("--cache", help="feature store file (default: the embedding cache)")
    g.add_argument("--no-cache", action="store_true", default=None, help="keep features in memory only")
    tr.add_argument("--workers", type=_int_at_least(0), help="decoding workers")
    tr.add_argument("--engine", choices=["local", "ray"], default=None,
                    help="ray: extract the features of images not yet in the feature store on Ray Data (as "
                         "score --engine ray), then train as usual")
    tr.add_argument("--ray-address", metavar="ADDR", default=None,
                    help="--engine ray: an existing cluster (default: an embedded local Ray)")
    tr.add_argument("--quiet", "-q", action="store_true", default=None, help="no progress")
    tr.set_defaults(func=_cmd_train)

    pre = sub_parser("pretrain", help="aesthetic pretraining: vila-p (image-comment pairs) or multiattr "
                                      "(per-attribute descriptions)")
    psub = pre.add_subparsers(dest="method", metavar="METHOD", required=True)
    pt = psub.add_parser("vila-p", formatter_class=_Formatter,
                         help="VILA-P: a CoCa pretrained on image-comment pairs",
                         description="Pretrain a CoCa (VILA-P, Ke et al. 2023) on images and their comments: "
                                     "contrastive + captioning loss. The --output directory scores zero-shot "
                                     "(--model DIR, any --prompts), is a --backbone for `photocritic train`, "
                                     "classifies styles (`photocritic styles`) and writes critiques "
                                     "(`photocritic critique`).")
    pt.add_argument("--init", required=True,
                    help="the general image-text checkpoint to start from: a CLIP/SigLIP directory, hub id "
                         "or backbone preset (clip-vit-b-16 ...), a VILA-P/CoCa directory, or random:tiny / random:small / "
                         "random:vit-b-16 (random weights, a tokenizer trained on the comments)")
    pt.add_argument("--captions", required=True, help="image comments: AVA-Captions/Karpathy-style or DPC "
                                                      ".json, .jsonl, or a folder of <id>.txt")
    pt.add_argument("--images", required=True, help="folder holding <id>.jpg (or .png ...) of the commented images")
    pt.add_argument("--output", required=True, help="folder for the model (must be empty, or --overwrite)")
    pt.add_argument("--epochs", type=_int_at_least(1), default=5, help="epochs")
    pt.add_argument("--batch-size", type=_int_at_least(2), default=32,
                    help="image-comment pairs per step (the contrastive loss's negatives)")
    pt.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of the poolers and text decoder")
    pt.add_argument("--lr-image", type=float, help="learning rate of the image tower (default: --lr / 10)")
    pt.add_argument("--lr-temperature", type=float, default=0.01,
                    help="learning rate of the contrastive temperature (its log; one scalar, which at the "
                         "network's rate would hardly move in a short run)")
    pt.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on the temperature)")
    pt.add_argument("--warmup-steps", type=_int_at_least(0), default=100,
                    help="steps over which both rates rise linearly from 0 (then constant)")
    pt.add_argument("--alpha", type=float, default=1.0, help="weight of the contrastive loss")
    pt.add_argument("--beta", type=float, default=2.0, help="weight of the captioning loss")
    pt.add_argument("--same-text-positives", action="store_true",
                    help="in the contrastive loss, pairs whose comments are the same text are positives of "
                         "one another, not negatives (repeated comments such as 'Nice shot!')")
    pt.add_argument("--gen-queries", type=_int_at_least(1),
                    help="queries of the generative pooler (default 196, as VILA; 16 for random:tiny)")
    pt.add_argument("--image-size", type=_int_at_least(16),
                    help="a random init's input side in pixels, a multiple of 16 (default: 64 for random:tiny, "
                         "128 for random:small, 224 for random:vit-b-16)")
    pt.add_argument("--max-length", type=_int_at_least(3), default=64, help="text positions, BOS and CLS included")
    pt.add_argument("--vocab-size", type=_int_at_least(16), default=4096,
                    help="size of the tokenizer trained for a random init")
    pt.add_argument("--tokenizer-corpus", metavar="PATH",
                    help="a random init's tokenizer also learns from these texts (any comments format)")
    pt.add_argument("--val-fraction", type=float, default=0.05, help="share of images held out, by id")
    pt.add_argument("--accumulate", type=_int_at_least(1), default=1, help="micro-batches per step")
    pt.add_argument("--prompts", default="vila", help="the zero-shot prompt set the model scores with")
    pt.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the batches")
    pt.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N or mps")
    pt.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="bf16 autocast (auto: where bf16 is native)")
    pt.add_argument("--workers", type=_int_at_least(0), help="decoding workers")
    pt.add_argument("--image-cache-mb", type=_megabytes, default=2048.0, metavar="MB",
                    help="decoded training images kept (in a memory-mapped temporary file shared by the "
                         "decoding workers) so each is decoded once per run, not once per epoch; images past "
                         "the budget (or past half the temporary folder's free space) are decoded every epoch; "
                         "0: no cache. Split among the processes")
    pt.add_argument("--resume", action="store_true", help="continue from the last epoch's checkpoint")
    pt.add_argument("--overwrite", action="store_true", help="replace what --output holds")
    pt.add_argument("--name", help="the model's name in its config.json")
    pt.add_argument("--quiet", "-q", action="store_true", help="no progress")
    pt.set_defaults(func=_cmd_pretrain)

    ma = psub.add_parser("multiattr", formatter_class=_Formatter,
                         help="multi-attribute contrastive pretraining on per-attribute descriptions",
                         description="Multi-attribute contrastive pretraining (after Huang et al., TPAMI 2024): "
                                     "the --init tower's features pass through adapters and "
                                     "per-attribute fusion into one embedding space per attribute, matched "
                                     "to the attribute descriptions by InfoNCE, with a semantic affinity "
                                     "loss that keeps the tower's content. The --output directory gives "
                                     "zero-shot attribute scores (score, explain) and is a --backbone for "
                                     "`photocritic train` (attributes, linear, ...).")
    ma.add_argument("--init", required=True, help="the image tower: a backbone preset (efficientnet-lite0, "
                                                  "clip-vit-b-16 ...), a CLIP/SigLIP or VILA-P directory, or a hub id")
    ma.add_argument("--attributes", required=True,
                    help="descriptions per image and attribute: {id: {attribute: text | [texts]}} .json, "
                         ".jsonl, or a .csv with one column per attribute")
    ma.add_argument("--images", required=True, help="folder holding <id>.jpg (or .png ...) of the described images")
    ma.add_argument("--output", required=True, help="folder for the model (must be empty, or --overwrite)")
    ma.add_argument("--text-encoder", default="minilm",
                    help="the frozen description encoder: minilm, mpnet, a directory or a hub id")
    ma.add_argument("--tower", choices=["frozen", "trainable"], default="frozen",
                    help="keep the --init tower frozen (adapters on its features, extracted once) or train "
                         "it too (on decoded images every step; slow on a CPU)")
    ma.add_argument("--lr-tower", type=float, help="learning rate of a trainable tower (default: --lr / 100)")
    ma.add_argument("--spaces", choices=["multi", "single"], default="multi",
                    help="one embedding space per attribute, or one space for all descriptions joined "
                         "(the same parameters; the ablation)")
    ma.add_argument("--affinity", type=float, default=10.0,
                    help="weight of the semantic affinity loss (0: off)")
    ma.add_argument("--affinity-on", choices=["spaces", "features"], default="spaces",
                    help="what the affinity loss keeps near the initial tower's similarities: the attribute "
                         "embeddings (what the attribute heads read; the default) or the adapted feature f")
    ma.add_argument("--affinity-form", choices=["gram", "neighbours"], default="gram",
                    help="gram: every pair's cosine stays what the initial tower's is (the default); "
                         "neighbours: only each image's near neighbours under the initial tower stay near "
                         "(a KL between softmaxed similarities)")
    ma.add_argument("--affinity-temperature", type=float, default=0.05,
                    help="the neighbours form's softmax temperature (default 0.05)")
    ma.add_argument("--fusion", choices=["auto", "tokens", "pooled"], default="auto",
                    help="fuse attributes with the tower's tokens (attention pooling) or its pooled "
                         "feature only (auto: tokens where the tower has them)")
    ma.add_argument("--space-dim", type=_int_at_least(2), default=64, help="width of each attribute space")
    ma.add_argument("--adapter-dim", type=_int_at_least(1), default=128, help="bottleneck of the adapters")
    ma.add_argument("--hidden", type=_int_at_least(1), default=256, help="width of the fusion layers")
    ma.add_argument("--epochs", type=_int_at_least(1), default=20, help="epochs")
    ma.add_argument("--batch-size", type=_int_at_least(2), default=128,
                    help="images per step (the contrastive loss's negatives)")
    ma.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    ma.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    ma.add_argument("--warmup-steps", type=_int_at_least(0), default=20,
                    help="steps over which the rate rises linearly from 0 (then constant)")
    ma.add_argument("--val-fraction", type=float, default=0.1, help="share of images held out, by id")
    ma.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the batches")
    ma.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N or mps")
    ma.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="bf16 for the tower's features and autocast (auto: where bf16 is native)")
    ma.add_argument("--workers", type=_int_at_least(0), help="decoding workers")
    ma.add_argument("--image-cache-mb", type=_megabytes, default=2048.0, metavar="MB",
                    help="with --tower trainable: decoded images kept so each is decoded once per run "
                         "(0: every epoch)")
    mg = ma.add_mutually_exclusive_group()
    mg.add_argument("--cache", help="feature store file (default: the embedding cache)")
    mg.add_argument("--no-cache", action="store_true", help="keep the tower's features in memory only")
    ma.add_argument("--resume", action="store_true", help="continue from the last epoch's checkpoint")
    ma.add_argument("--overwrite", action="store_true", help="replace what --output holds")
    ma.add_argument("--name", help="the model's name in its config.json")
    ma.add_argument("--quiet", "-q", action="store_true", help="no progress")
    ma.set_defaults(func=_cmd_pretrain_multiattr)

    md = sub_parser("models", help="list the named presets")
    md.set_defaults(func=_cmd_models)
    return ap


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# -- warnings: counted, not spilled ------------------------------------------------

_WARNINGS: dict[str, int] = {}


def _warning_name(message, category) -> str:
    text = " ".join(str(message).split()[:3]).rstrip(".:,")
    return f"{category.__name__}: {text}" if category is UserWarning else category.__name__


@contextlib.contextmanager
def _counted_warnings():
    """Library warnings (scipy's OptimizeWarning, PIL's "Corrupt EXIF", ...)
    are counted for the summary line; photocritic's own warnings are printed."""
    from .device import PrecisionWarning

    _WARNINGS.clear()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PrecisionWarning):
            print(f"photocritic: warning: {message}", file=sys.stderr)
            return
        name = _warning_name(message, category)
        _WARNINGS[name] = _WARNINGS.get(name, 0) + 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _warning_note() -> str:
    from .pipeline import warnings_note

    return warnings_note(_WARNINGS)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Expected failures become one line on stderr and an exit code, in this order
    # (photocritic's own exceptions carry theirs; see photocritic.errors).
    expected = ((PhotocriticError, None), (OutputError, EXIT_ERROR), (OSError, EXIT_ERROR),
                (ValueError, EXIT_USAGE))  # ValueError covers LabelFormatError
    try:
        with _counted_warnings():
            return args.func(args)
    except KeyboardInterrupt as exc:
        note = getattr(exc, "note", None) or "interrupted"
        print(f"photocritic: {note}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (e.g. `head`) has gone: stop quietly, without a second error at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except tuple(kind for kind, _ in expected) as exc:
        print(f"photocritic: error: {_describe(exc)}", file=sys.stderr)
        code = next(code for kind, code in expected if isinstance(exc, kind))
        return exc.exit_code if code is None else code


if __name__ == "__main__":
    raise SystemExit(main())
