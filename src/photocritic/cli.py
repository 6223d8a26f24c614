"""The ``photocritic`` command line."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
COLUMNS = ["path", "score", "status", "error", "cached"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3


class UsageError(Exception):
    pass


def write_rows(rows, output: str | Path) -> None:
    """Write score rows as CSV, JSONL or Parquet, chosen by the extension."""
    output = Path(output)
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {output}: unknown extension {output.suffix!r}; "
                         f"use one of {', '.join(OUTPUT_FORMATS)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    records = [r.as_dict() for r in rows]
    tmp = output.with_name(output.name + ".part")
    if fmt == "csv":
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            for rec in records:
                w.writerow({**rec, "score": "" if rec["score"] is None else f"{rec['score']:.6f}"})
    elif fmt == "jsonl":
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "path": pa.array([r["path"] for r in records], pa.string()),
            "score": pa.array([r["score"] for r in records], pa.float64()),
            "status": pa.array([r["status"] for r in records], pa.string()),
            "error": pa.array([r["error"] for r in records], pa.string()),
            "cached": pa.array([r["cached"] for r in records], pa.bool_()),
        })
        pq.write_table(table, tmp)
    os.replace(tmp, output)


def format_table(rows) -> str:
    ok = sorted((r for r in rows if r.status == "ok"), key=lambda r: -r.score)
    bad = [r for r in rows if r.status != "ok"]
    lines = [f"{'rank':>4}  {'score':>6}  path"]
    for k, r in enumerate(ok, 1):
        lines.append(f"{k:>4}  {r.score:6.2f}  {r.path}")
    if bad:
        lines.append("")
        lines.append("not scored:")
        for r in bad:
            lines.append(f"  {r.status:<10} {r.error}")
    return "\n".join(lines)


def _cmd_score(args) -> int:
    from . import load
    from .data.images import list_images

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.output and Path(args.output).suffix.lower() not in OUTPUT_FORMATS:
        raise UsageError(f"--output {args.output}: unknown extension; use one of "
                         f"{', '.join(OUTPUT_FORMATS)}")
    paths = list_images(args.paths, recursive=args.recursive)
    if not paths:
        raise UsageError("no image files found under " + ", ".join(args.paths)
                         + ("" if args.recursive else " (use --recursive to look in sub-folders)"))
    critic = load(args.model, device=args.device, precision=args.precision)
    cache = _open_cache(args)
    try:
        rows = critic.score(paths, batch_size=args.batch_size, cache=cache, workers=args.workers,
                            progress=not args.quiet, decode=args.decode)
    finally:
        if cache is not None:
            cache.close()
    stats = critic.last_stats
    if args.output:
        write_rows(rows, args.output)
    if args.table or not args.output:
        print(format_table(rows))
    print(stats.summary() + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    return EXIT_OK


def _open_cache(args):
    from .features import EmbeddingCache, default_cache_path

    return None if args.no_cache else EmbeddingCache(args.cache or default_cache_path())


def _cmd_eval(args) -> int:
    from . import load
    from .data.datasets import load_dataset
    from .evaluation import evaluate

    ds = load_dataset(args.dataset, images=args.images)
    info = None
    if args.split:
        ds, info = ds.split(args.split, seed=args.seed)
    if len(ds) < 2:
        raise UsageError(f"dataset {args.dataset}"
                         + (f" split {args.split}" if args.split else "") + f" has {len(ds)} labelled images")
    critic = load(args.model, device=args.device, precision=args.precision)
    cache = _open_cache(args)
    try:
        res = evaluate(critic, ds, args.output, info, cache=cache, batch_size=args.batch_size,
                       progress=not args.quiet, n_boot=args.bootstrap, decode=args.decode)
    finally:
        if cache is not None:
            cache.close()
    keys = [k for k in ("n", "srcc", "plcc", "accuracy", "emd") if k in res]
    print(json.dumps({k: res[k] for k in keys}))
    print(f"photocritic: evaluated {res['n']} images ({res['images_missing']} missing, "
          f"{res['images_failed']} failed) -> {args.output}", file=sys.stderr)
    return EXIT_OK


def _cmd_data_summary(args) -> int:
    from .data.datasets import load_dataset, summary

    ds = load_dataset(args.spec, images=args.images, comments=args.comments)
    print(json.dumps(summary(ds), indent=2))
    return EXIT_OK


def _cmd_models(args) -> int:
    from .zoo import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<12} {preset['summary']}")
    return EXIT_OK


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that scores images."""
    p.add_argument("--model", default="lite",
                   help="preset name, model directory, or CLIP/SigLIP hub id/directory (default: lite)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cache", help="embedding cache file (default: the user cache directory, "
                                   "or $PHOTOCRITIC_CACHE)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--decode", choices=["auto", "threads", "workers"], default="auto",
                    help="decode in worker processes overlapped with the model, or in threads "
                         "between batches (auto: workers for cuda, threads for cpu)")
    p.add_argument("--workers", type=int, default=None,
                    help="decoding processes (default: half the cores, 1 to 4) or threads "
                         "(default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="photocritic",
                                 description="Judge the aesthetics of images with vision-language models.")
    ap.add_argument("--version", action="version", version=f"photocritic {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    sc = sub.add_parser("score", help="score images or folders of images (1-10)",
                        description="Score images. Bad files get a status and a message; "
                                    "all other files are scored.")
    sc.add_argument("paths", nargs="+", help="image files and/or folders")
    sc.add_argument("--output", "-o", help="write rows to FILE (.csv, .jsonl or .parquet); "
                                           "without it, print a ranked table")
    sc.add_argument("--table", action="store_true",
                    help="print the ranked table even when writing --output")
    sc.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    _add_run_options(sc)
    sc.set_defaults(func=_cmd_score)

    ev = sub.add_parser("eval", help="evaluate a model on a labelled data set",
                        description="Score a labelled split through the normal pipeline (cache "
                                    "included) and write metrics.json, predictions.csv, report.md "
                                    "and plots to --output.")
    ev.add_argument("--dataset", required=True, help="dataset SPEC: an AVA folder or label file, "
                                                     "or a labels .csv/.jsonl (or a folder holding one)")
    ev.add_argument("--split", help="split name (a list in the dataset, a split column value, or "
                                    "train/val/test of a seeded random split) or a file of image ids")
    ev.add_argument("--images", help="folder the images are in (default: beside the labels)")
    ev.add_argument("--output", "-o", required=True, help="folder for the report")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random split and the bootstrap")
    _add_run_options(ev)
    ev.set_defaults(func=_cmd_eval)

    dt = sub.add_parser("data", help="inspect data sets")
    dsub = dt.add_subparsers(dest="data_command", required=True)
    su = dsub.add_parser("summary", help="print a JSON summary of a data set")
    su.add_argument("spec", help="dataset SPEC (see `photocritic eval --help`)")
    su.add_argument("--images", help="folder the images are in (reports how many are missing)")
    su.add_argument("--comments", help="comments: a folder of .txt files, .json or .jsonl")
    su.set_defaults(func=_cmd_data_summary)

    md = sub.add_parser("models", help="list the named presets")
    md.set_defaults(func=_cmd_models)
    return ap


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .encoders.base import ModelNotAvailableError
    from .features import CacheError

    # Expected failures become one line on stderr and an exit code, in this order.
    expected = ((UsageError, EXIT_USAGE), (ModelNotAvailableError, EXIT_MODEL),
                (CacheError, EXIT_ERROR), (OSError, EXIT_ERROR),
                (ValueError, EXIT_USAGE))  # ValueError covers LabelFormatError
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("photocritic: interrupted; finished batches are in the cache", file=sys.stderr)
        return 130
    except tuple(kind for kind, _ in expected) as exc:
        print(f"photocritic: error: {_describe(exc)}", file=sys.stderr)
        return next(code for kind, code in expected if isinstance(exc, kind))


if __name__ == "__main__":
    raise SystemExit(main())
