"""The ``photocritic`` command line."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
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
    critic = _load(args)
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


def _load(args):
    from . import load

    return load(args.model, device=args.device, precision=args.precision, prompts=args.prompts,
                weights=args.weights)


def _open_cache(args, required: bool = False):
    """The cache the options name; with ``required``, a temporary one for --no-cache."""
    import tempfile

    from .features import EmbeddingCache, default_cache_path

    if args.no_cache and required:
        return EmbeddingCache(Path(tempfile.mkdtemp(prefix="photocritic-")) / "embeddings.sqlite")
    return None if args.no_cache else EmbeddingCache(args.cache or default_cache_path())


@contextlib.contextmanager
def _embedded_split(args, zero_shot: bool = False):
    """Load --dataset (and --split), embed its images through the pipeline
    and cache; yields (dataset, model, embeddings, indices of the scored
    images) with the cache attached for the model's text side."""
    from .data.datasets import load_dataset

    ds = load_dataset(args.dataset, images=args.images)
    if args.split:
        ds, _ = ds.split(args.split, seed=args.seed)
    if ds.root is None or not ds.on_1_to_10:
        raise UsageError(f"{args.command} needs images (--images) and labels on the 1-10 scale")
    critic = _load(args)
    if zero_shot and critic.prompts is None:
        raise UsageError(f"{args.model} is not a zero-shot (CLIP/SigLIP) model")
    cache = _open_cache(args, required=True)
    try:
        rows, emb = critic.embed_paths(ds.image_paths(), cache, batch_size=args.batch_size,
                                       progress=not args.quiet, decode=args.decode)
        ok = [i for i, r in enumerate(rows) if r.status == "ok"]
        if len(ok) < 3:
            raise UsageError(f"only {len(ok)} images could be scored")
        critic.text_cache = cache
        yield ds, critic, emb, ok
    finally:
        critic.text_cache = None
        cache.close()


def _cmd_prompts_list(args) -> int:
    from .methods.prompt_search import adjective_lists
    from .methods.zeroshot import PromptSet, shipped_prompt_sets

    for name in shipped_prompt_sets():
        ps = PromptSet.load(name)
        print(f"{name:<24} {ps.rule:<13} {ps.description}")
    pos, neg = adjective_lists()
    print(f"\nprompt-search adjectives: {len(pos)} positive, {len(neg)} negative (WordNet)")
    return EXIT_OK


def _cmd_prompts_search(args) -> int:
    from .methods import prompt_search as S

    pos, neg = S.adjective_lists()
    pos = args.positive.split(",") if args.positive else pos
    neg = args.negative.split(",") if args.negative else neg
    with _embedded_split(args, zero_shot=True) as (ds, critic, emb, ok):
        results = S.search(emb, ds.mean[ok], critic.text_embeddings, pos, neg, args.template, args.task)
    best = S.best_prompt_set(results, args.template)
    best.save(args.output)
    if args.table:
        S.save_results(results, args.table)
    metric = "srcc" if args.task == "continuous" else "accuracy"
    for r in results[:10]:
        print(f"{r['positive']:>14} / {r['negative']:<14} {metric} {r[metric]:.4f}")
    print(f"photocritic: {len(results)} pairs on {len(ok)} images; best saved to {args.output} "
          f"(use it with --prompts {args.output})", file=sys.stderr)
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
        raise UsageError(f"{args.model} is not a zero-shot (CLIP/SigLIP) model")
    root = Path(args.images)
    paths = [str(root / f"{i}.jpg") for i in lists.test_ids]
    present = [k for k, p in enumerate(paths) if Path(p).exists()]
    if len(present) < 2:
        raise UsageError(f"only {len(present)} of the {len(paths)} style test images are in {root}")
    cache = _open_cache(args, required=True)
    try:
        rows, emb = critic.embed_paths([paths[k] for k in present], cache, batch_size=args.batch_size,
                                       progress=not args.quiet, decode=args.decode)
        critic.text_cache = cache
        prompts = ST.style_prompts(lists.names)
        text = critic.text_embeddings([t for group in prompts for t in group])
    finally:
        critic.text_cache = None
        cache.close()
    ok = [present[k] for k, r in enumerate(rows) if r.status == "ok"]
    scores = ST.style_scores(emb, text, len(ST.TEMPLATES))
    res = ST.evaluate(lists.test_labels[ok], scores, lists.names)
    res.update(model=critic.name, images_listed=len(paths), images_missing=len(paths) - len(present),
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

    ds = load_dataset(args.dataset, images=args.images)
    info = None
    if args.split:
        ds, info = ds.split(args.split, seed=args.seed)
    if len(ds) < 2:
        raise UsageError(f"dataset {args.dataset}"
                         + (f" split {args.split}" if args.split else "") + f" has {len(ds)} labelled images")
    critic = _load(args)
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
        print(f"{name:<16} {preset['summary']}")
    return EXIT_OK


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that scores images."""
    p.add_argument("--model", default="lite",
                   help="preset name, model directory, or CLIP/SigLIP hub id/directory (default: lite)")
    p.add_argument("--prompts", help="zero-shot prompt set: a shipped name (see `photocritic "
                                     "prompts list`) or a JSON file")
    p.add_argument("--weights", help="local directory of a zero-shot preset's weights")
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


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that reads a labelled split."""
    p.add_argument("--dataset", required=True, help="dataset SPEC: an AVA folder or label file, "
                                                    "or a labels .csv/.jsonl (or a folder holding one)")
    p.add_argument("--split", help="split name (a list in the dataset, a split column value, or "
                                   "train/val/test of a seeded random split) or a file of image ids")
    p.add_argument("--images", help="folder the images are in (default: beside the labels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (and bootstrap)")


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
    _add_dataset_options(ev)
    ev.add_argument("--output", "-o", required=True, help="folder for the report")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    _add_run_options(ev)
    ev.set_defaults(func=_cmd_eval)

    dt = sub.add_parser("data", help="inspect data sets")
    dsub = dt.add_subparsers(dest="data_command", required=True)
    su = dsub.add_parser("summary", help="print a JSON summary of a data set")
    su.add_argument("spec", help="dataset SPEC (see `photocritic eval --help`)")
    su.add_argument("--images", help="folder the images are in (reports how many are missing)")
    su.add_argument("--comments", help="comments: a folder of .txt files, .json or .jsonl")
    su.set_defaults(func=_cmd_data_summary)

    pr = sub.add_parser("prompts", help="zero-shot prompt sets")
    psub = pr.add_subparsers(dest="prompts_command", required=True)
    pl = psub.add_parser("list", help="list the shipped prompt sets")
    pl.set_defaults(func=_cmd_prompts_list)
    ps = psub.add_parser("search", help="find the best adjective pair on a labelled split",
                         description="Try every positive x negative adjective pair (default: the "
                                     "27 x 12 WordNet lists) in --template on a labelled split and "
                                     "save the best as a prompt set.")
    _add_dataset_options(ps)
    ps.add_argument("--task", choices=["continuous", "binary"], default="continuous",
                    help="rank by SRCC of the weighted sum, or by binary accuracy at 5")
    ps.add_argument("--template", default="a {label} picture")
    ps.add_argument("--positive", help="comma-separated positive adjectives (default: WordNet list)")
    ps.add_argument("--negative", help="comma-separated negative adjectives (default: WordNet list)")
    ps.add_argument("--output", "-o", required=True, help="JSON file for the winning prompt set")
    ps.add_argument("--table", help="CSV file for every pair's score")
    _add_run_options(ps)
    ps.set_defaults(func=_cmd_prompts_search)

    ca = sub.add_parser("calibrate", help="fit a model's 1-10 map to labelled data; save the model",
                        description="Fit the monotone logistic map from a model's raw output to "
                                    "the labels (least squares) and save the model with it as a "
                                    "directory that --model accepts. Rankings do not change.")
    _add_dataset_options(ca)
    ca.add_argument("--output", "-o", required=True, help="folder for the calibrated model")
    _add_run_options(ca)
    ca.set_defaults(func=_cmd_calibrate)

    st = sub.add_parser("styles", help="zero-shot AVA style classification, evaluated by mAP")
    st.add_argument("--styles", required=True, help="AVA style_image_lists folder")
    st.add_argument("--images", required=True, help="folder holding <id>.jpg of the test list")
    st.add_argument("--output", "-o", required=True)
    _add_run_options(st)
    st.set_defaults(func=_cmd_styles)

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
