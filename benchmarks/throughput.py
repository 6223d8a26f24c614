"""Scoring throughput: end-to-end, encoder-only and cached re-run, fp32 and bf16.

For the `lite` model and for a random-weight CLIP ViT-B/32 saved to a local
directory (loaded through the normal hub code path), on a folder of JPEGs of
1024x768 made from real photos that scikit-image ships (random crops, so every
file has distinct content):

* end-to-end: `model.score(paths)` with an empty cache - hashing, decoding,
  encoding, cache writes and the head, all included; the encoder's weights
  are loaded before the clock starts. Measured for each --decode mode:
  `auto` (threads between batches, on CPU) and `workers` (processes
  overlapped with the model);
* encoder-only: the encoder alone on pre-decoded, normalised tensors in
  batches of the same size;
* cached re-run: a freshly loaded model scoring the same folder again from the
  cache (it never loads the encoder).

Each figure is the median of --repeats interleaved rounds (default 3); the
ratios are medians of per-round ratios. The files sit in the page cache.

Prints a table and writes benchmarks/results/throughput.json.
Usage: python benchmarks/throughput.py [--lite-images 512] [--clip-images 320]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import photocritic
from _common import machine_line, make_jpegs, write_results
from photocritic.data.images import decode_for
from photocritic.encoders.tiny import save_random_clip
from photocritic.features import EmbeddingCache
from photocritic.models import PRECISIONS

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"


def encoder_only(model, paths: list[str], batch_size: int) -> float:
    pre = model.preprocess
    dtype = PRECISIONS[model.precision]
    batches = []
    for start in range(0, len(paths), batch_size):
        arr = np.stack([decode_for(open(p, "rb").read(), pre) for p in paths[start:start + batch_size]])
        batches.append(pre.normalize(torch.from_numpy(arr)).to(dtype))
    enc = model.encoder
    enc.encode(batches[0][:2])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        enc.encode(b)
    return len(paths) / (time.perf_counter() - t0)


def measure(name: str, model_ref: str, paths: list[str], precision: str, batch_size: int,
            workers: int | None, tmp: Path, repeats: int, decode: str) -> dict:
    """Median over ``repeats`` interleaved rounds of (encoder-only, end-to-end
    on an empty cache, cached re-run); ratios are taken within each round so
    that the machine's slow drifts cancel."""
    model = photocritic.load(model_ref, precision=precision)
    model.encoder  # load weights before timing
    # warm-up on a few files (first-call allocations, thread pools)
    model.score(paths[:batch_size], batch_size=batch_size, workers=0)
    rounds = []
    for r in range(repeats):
        enc = encoder_only(model, paths, batch_size)
        cache = EmbeddingCache(tmp / f"{name}-{precision}-{decode}-{r}.sqlite")
        t0 = time.perf_counter()
        rows = model.score(paths, batch_size=batch_size, cache=cache, workers=workers, decode=decode)
        first = time.perf_counter() - t0
        assert all(row.status == "ok" for row in rows) and rows.stats.computed == len(paths)
        fresh = photocritic.load(model_ref, precision=precision)
        t0 = time.perf_counter()
        again = fresh.score(paths, batch_size=batch_size, cache=cache)
        cached = time.perf_counter() - t0
        assert again.stats.cached == len(paths) and fresh._encoder is None
        cache.close()
        rounds.append({"e2e": len(paths) / first, "enc": enc, "cached": len(paths) / cached,
                       "e2e_over_enc": len(paths) / first / enc, "cached_over_first": first / cached})
    med = {k: float(np.median([rd[k] for rd in rounds])) for k in rounds[0]}
    out = {"model": name, "precision": precision, "decode": decode, "images": len(paths),
           "batch_size": batch_size, "repeats": repeats,
           "end_to_end_img_s": round(med["e2e"], 2), "encoder_only_img_s": round(med["enc"], 2),
           "cached_rerun_img_s": round(med["cached"], 1),
           "end_to_end_over_encoder": round(med["e2e_over_enc"], 3),
           "cached_over_first_run": round(med["cached_over_first"], 1),
           "rounds": [{k: round(v, 3) for k, v in rd.items()} for rd in rounds]}
    print(f"{name:<22} {precision:<5} {decode:<8} {out['end_to_end_img_s']:>9.1f} {out['encoder_only_img_s']:>9.1f} "
          f"{out['cached_rerun_img_s']:>9.1f} {out['end_to_end_over_encoder']:>8.0%} "
          f"{out['cached_over_first_run']:>8.1f}x", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="photocritic scoring throughput")
    ap.add_argument("--lite-images", type=int, default=512)
    ap.add_argument("--clip-images", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode", default="auto,workers",
                    help="decode modes to measure end to end (auto = threads on CPU)")
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    print(machine_line(), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="photocritic-bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # leave no temp files behind
    paths = make_jpegs(tmp / "jpegs", max(args.lite_images, args.clip_images))
    clip_dir = save_random_clip(tmp / "clip-vit-b-32-random", size="vit-b-32", kind="clip")
    print(f"{'model':<22} {'prec':<5} {'decode':<8} {'e2e img/s':>9} {'enc img/s':>9} {'cached':>9} "
          f"{'e2e/enc':>8} {'cached/1st':>9}", flush=True)
    results = []
    for precision in args.precisions.split(","):
        for decode in args.decode.split(","):
            results.append(measure("lite", "lite", paths[:args.lite_images], precision,
                                   args.batch_size, args.workers, tmp, args.repeats, decode))
            results.append(measure("clip-vit-b-32-random", str(clip_dir), paths[:args.clip_images],
                                   precision, args.batch_size, args.workers, tmp, args.repeats, decode))
    write_results(args.output, jpeg_size="1024x768", results=results)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
