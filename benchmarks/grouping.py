"""Grouping for `cull` at scale: time and peak memory of `group_photos`.

Embeddings of `lite`'s width (2,912) for N photos in scenes of about three
frames, a fifth of them without a capture time, and perceptual hashes
(`--phash`): the all-pairs work (near-identical features, photos without a
time, hash distances) runs a block of `PAIR_BLOCK` pairs at a time, so
memory grows with N (two float64 copies of the embeddings), never with N².
Time grows with N² (every pair's cosine is computed once for the duplicate
check). Peak memory is Python's traced allocations (numpy's included)
beyond the inputs.

Usage: python benchmarks/grouping.py [--photos 2000 10000]
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


def world(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, max(1, n // 3), n)
    centres = rng.normal(size=(scene.max() + 1, dim)).astype(np.float32)
    emb = centres[scene] + rng.normal(size=(n, dim)).astype(np.float32)
    times = [float(s * 60 + rng.uniform(0, 3)) if rng.random() > 0.2 else None for s in scene]
    hashes = [int(h) for h in rng.integers(0, 1 << 62, n)]
    return emb, times, hashes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--dim", type=int, default=2912)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    print(machine_line())
    rows = []
    for n in args.photos:
        emb, times, hashes = world(n, args.dim)
        tracemalloc.start()
        t0 = time.perf_counter()
        groups = group_photos(emb, times, CullOptions(phash=True), hashes)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        inputs = emb.nbytes / 2**20
        rows.append({"photos": n, "seconds": round(seconds, 2), "peak_mib": round(peak, 1),
                     "embeddings_mib": round(inputs, 1), "groups": int(groups.max() + 1)})
        print(f"{n} photos: {seconds:.2f} s, peak {peak:.0f} MiB (embeddings {inputs:.0f} MiB, float32), "
              f"{groups.max() + 1} groups", flush=True)
    write_results(args.output, dim=args.dim, pair_block=PAIR_BLOCK, untimed_share=0.2, phash=True, runs=rows)


if __name__ == "__main__":
    main()
