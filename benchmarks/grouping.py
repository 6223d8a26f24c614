"""Grouping for `cull` at scale: time and peak memory of `group_photos`.

Embeddings of `lite`'s width (2,912) for N photos in scenes of about three
frames, a share of them (`--untimed`) without a capture time, and
perceptual hashes (`--phash`). Photos with times are compared only within
their burst-gap window; each photo without a time is compared with every
photo, and the hashes all pairs, a block of `PAIR_BLOCK` pairs at a time:
memory grows with N (one float64 copy of the embeddings), never with N²;
time grows with N x the untimed photos. Peak memory is Python's traced
allocations (numpy's included) beyond the inputs.

Usage: python benchmarks/grouping.py [--photos 2000 10000 50000] [--untimed 0.2 0.0]
Writes benchmarks/results/grouping.json.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np

from _common import machine_line, write_results
from photocritic.culling import PAIR_BLOCK, CullOptions, group_photos

RESULTS = Path(__file__).resolve().parent / "results" / "grouping.json"


def world(n: int, dim: int, untimed: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, max(1, n // 3), n)
    centres = rng.normal(size=(scene.max() + 1, dim)).astype(np.float32)
    emb = centres[scene] + rng.normal(size=(n, dim)).astype(np.float32)
    times = [float(s * 60 + rng.uniform(0, 3)) if rng.random() >= untimed else None for s in scene]
    hashes = [int(h) for h in rng.integers(0, 1 << 62, n)]
    return emb, times, hashes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, nargs="+", default=[2000, 10000, 50000])
    ap.add_argument("--untimed", type=float, nargs="+", default=[0.2, 0.0],
                    help="shares of photos without a capture time (each is compared with every photo)")
    ap.add_argument("--dim", type=int, default=2912)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    print(machine_line())
    rows = []
    for share, n in [(u, n) for u in args.untimed for n in args.photos]:
        emb, times, hashes = world(n, args.dim, share)
        tracemalloc.start()
        t0 = time.perf_counter()
        groups = group_photos(emb, times, CullOptions(phash=True), hashes)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        inputs = emb.nbytes / 2**20
        rows.append({"photos": n, "untimed_share": share, "seconds": round(seconds, 2), "peak_mib": round(peak, 1),
                     "embeddings_mib": round(inputs, 1), "groups": int(groups.max() + 1)})
        print(f"{n} photos, {share:.0%} without a time: {seconds:.2f} s, peak {peak:.0f} MiB (embeddings {inputs:.0f} MiB, float32), "
              f"{groups.max() + 1} groups", flush=True)
    write_results(args.output, dim=args.dim, pair_block=PAIR_BLOCK, phash=True, runs=rows)


if __name__ == "__main__":
    main()
