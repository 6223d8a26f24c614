"""Ray Data scoring against the local pipeline, in one run on this machine.

The same files (1024x768 JPEGs made from real photos, as
benchmarks/throughput.py makes them), the same model (`lite`), no cache:

* local: `model.score(paths)` (the model loaded before the clock);
* ray: `photocritic score --engine ray` in-process (`score_with_ray`) on an
  embedded local Ray started before the clock; the clock includes planning
  the shards, the actors' start and model load, decoding in Ray tasks, the
  model in the actor pool and writing the Parquet shards.

Then a re-run of the ray command on the finished output, which must skip
every shard. The two throughputs are measured alternately (--rounds) and
the ratio is the median of per-round ratios.

With --memory: the driver's peak resident memory of `photocritic score
--engine ray` (a subprocess) on N and 4N small photos (320x240), which must
not grow with N (benchmarks/results/ray_memory.json).

Usage: python benchmarks/ray.py [--images 1024] [--rounds 2]
       python benchmarks/ray.py --memory [--images 500]
Writes benchmarks/results/ray.json (ray_memory.json with --memory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

# This file is named ray.py: its folder goes to the end of the path, so that
# `import ray` finds Ray, and `_common` is still found.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]

import numpy as np  # noqa: E402

import photocritic  # noqa: E402
from _common import photo_folder, write_results  # noqa: E402
from photocritic.engine_ray import init_ray, read_shards, score_with_ray  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ray.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--actor-cpus", type=float, default=0.5)
    ap.add_argument("--output", default=None)
    ap.add_argument("--memory", action="store_true", help="measure the driver's memory against N instead")
    args = ap.parse_args()
    if args.memory:
        return memory(args)
    args.output = args.output or str(RESULTS)
    work, paths = photo_folder("pc-ray-", args.images)
    model = photocritic.load("lite")
    model.score(paths[:4])
    init_ray(None, quiet=True)
    local_rates, ray_rates, ratios = [], [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        rows = model.score(paths, batch_size=args.batch_size)
        local = len(paths) / (time.perf_counter() - t0)
        out = work / f"out{r}"
        t0 = time.perf_counter()
        got = score_with_ray([str(work / "photos")], out, "lite", shard_size=args.shard_size,
                             batch_size=args.batch_size, actor_cpus=args.actor_cpus)
        ray_rate = len(paths) / (time.perf_counter() - t0)
        local_rates.append(local)
        ray_rates.append(ray_rate)
        ratios.append(ray_rate / local)
        print(f"round {r + 1}: local {local:.1f} img/s, ray {ray_rate:.1f} img/s, ratio {ray_rate / local:.2f} "
              f"({got['shards']} shards)")
    ray_rows = read_shards(out)
    ref = {r.path: r.score for r in rows}
    diff = max(abs(x["score"] - ref[x["path"]]) for x in ray_rows)
    t0 = time.perf_counter()
    again = score_with_ray([str(work / "photos")], out, "lite", shard_size=args.shard_size)
    rerun_s = time.perf_counter() - t0
    out_fields = {
        "images": len(paths), "model": "lite", "precision": model.precision, "shard_size": args.shard_size,
        "batch_size": args.batch_size, "actor_cpus": args.actor_cpus, "rounds": args.rounds,
        "local_img_per_s": [round(x, 2) for x in local_rates], "ray_img_per_s": [round(x, 2) for x in ray_rates],
        "ray_over_local_median": round(float(np.median(ratios)), 3),
        "max_abs_score_difference": float(diff),
        "rerun_computed_shards": again["computed_shards"], "rerun_skipped_shards": again["skipped_shards"],
        "rerun_seconds": round(rerun_s, 2),
    }
    print(f"ray / local: {out_fields['ray_over_local_median']:.2f} (median of {args.rounds} rounds); largest score "
          f"difference {diff:.2e}; re-run: {again['computed_shards']} shards computed, {again['skipped_shards']} "
          f"skipped in {rerun_s:.1f} s")
    write_results(args.output, **out_fields)
    shutil.rmtree(work, ignore_errors=True)


def memory(args) -> None:
    """Peak RSS of the driver process for N and 4N inputs (the embedded Ray's
    own processes are separate; the object store is bounded by Ray)."""
    import resource
    import tempfile
    import subprocess

    from PIL import Image

    from _common import machine_line  # noqa: E402

    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix="pc-raymem-"))
    base = [Image.open(p).convert("RGB").resize((320, 240)) for p in sorted(Path(HERE).parent.glob("examples/*.jpg"))]
    n = args.images
    (work / "p").mkdir()
    names = []
    for i in range(4 * n):
        a = np.roll(np.asarray(base[i % len(base)]), (i * 37) % 320, axis=1)
        names.append(str(work / "p" / f"{i:05d}.jpg"))
        Image.fromarray(a).save(names[-1], quality=85)
    peaks = {}
    for count in (n, 4 * n):
        (work / f"list{count}.txt").write_text("\n".join(names[:count]) + "\n")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "photocritic", "score", str(work / f"list{count}.txt"), "--engine",
                        "ray", "--output", str(work / f"out{count}"), "--shard-size", "256", "-q"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # ru_maxrss of children: the largest of those waited for so far (KiB)
        peaks[count] = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                        time.perf_counter() - t0)
        print(f"{count} photos: driver peak RSS so far {peaks[count][0]:.0f} MB ({peaks[count][1]:.0f} s)")
    a, b = peaks[n][0], peaks[4 * n][0]
    write_results(args.output or str(RESULTS.with_name("ray_memory.json")), photos=[n, 4 * n],
                  driver_peak_rss_mb=[round(a, 1), round(b, 1)], growth_mb=round(b - a, 1),
                  seconds=[round(peaks[n][1], 1), round(peaks[4 * n][1], 1)])
    print(f"growth from {n} to {4 * n} photos: {b - a:+.1f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
