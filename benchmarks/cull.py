"""Culling bursts made from real photos: grouping, picks, and time against scoring.

`photocritic.data.bursts.make_bursts` shoots scenes (crops of the synthetic
world's real source photos: Debian wallpapers and scikit-image photos) as
bursts of 1-6 frames: one undegraded frame, the others shifted a few per
cent and blurred or under/over-exposed; frames 0.1-0.5 s apart, scenes
minutes apart, times in EXIF. Then, with `lite`, no cache, model loaded
before the clock:

* grouping: adjusted Rand index (scikit-learn) of the cull's groups against
  the true scenes;
* picks: the share of multi-frame scenes whose undegraded frame is ranked
  first (`keep`) in its group;
* time: `cull` against `score` of the same files, alternately (--rounds);
* the cosine similarities (centred embeddings) of frame pairs of one scene
  and of consecutive scenes' pairs, to show where the default threshold sits.

Usage: python benchmarks/cull.py [--photos 2000] [--rounds 2]
Writes benchmarks/results/cull.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

import photocritic
from _common import machine_line, write_results
from photocritic.culling import CullOptions, cull
from photocritic.data.bursts import make_bursts

RESULTS = Path(__file__).resolve().parent / "results" / "cull.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--similarity", type=float, default=CullOptions.similarity)
    ap.add_argument("--tie", type=float, default=CullOptions.tie)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix="pc-cull-"))
    t0 = time.perf_counter()
    truth = make_bursts(work / "photos", args.photos, seed=args.seed)
    print(f"{len(truth)} photos of {len({v['group'] for v in truth.values()})} scenes made in "
          f"{time.perf_counter() - t0:.0f} s")
    paths = sorted(str(work / "photos" / n) for n in truth)
    model = photocritic.load("lite")
    model.score(paths[:4])
    opts = CullOptions(similarity=args.similarity, tie=args.tie)
    score_s, cull_s = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        model.score(paths)
        score_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = cull(model, paths, opts)
        cull_s.append(time.perf_counter() - t0)
        print(f"score {score_s[-1]:.1f} s, cull {cull_s[-1]:.1f} s ({cull_s[-1] / score_s[-1]:.2f}x)")
    rows = {Path(r.path).name: r for r in result.rows}
    names = sorted(truth)
    ari = adjusted_rand_score([truth[n]["group"] for n in names], [rows[n].group for n in names])
    multi = {}
    for n in names:
        multi.setdefault(truth[n]["group"], []).append(n)
    multi = {g: ns for g, ns in multi.items() if len(ns) > 1}
    picked = [next(n for n in ns if truth[n]["best"]) for ns in multi.values()]
    pick_ok = float(np.mean([rows[n].rank == 1 for n in picked]))
    # the same bursts ranked by score alone (true groups, no tie-break): what the model gives the rules
    by_score = float(np.mean([max(ns, key=lambda n: rows[n].score) == best for ns, best in zip(multi.values(), picked)]))
    # where the pick went wrong: the edit of the frame ranked first instead
    wrong, by_source = {}, {}
    for ns, best in zip(multi.values(), picked):
        tally = by_source.setdefault(truth[best]["source"], [0, 0])  # [wrong picks, bursts]
        tally[1] += 1
        if rows[best].rank != 1:
            tally[0] += 1
            first = min((n for n in ns if rows[n].group == rows[best].group), key=lambda n: rows[n].rank)
            wrong[truth[first]["edit"]] = wrong.get(truth[first]["edit"], 0) + 1
    by_source = dict(sorted(((s, t) for s, t in by_source.items() if t[0]), key=lambda kv: -kv[1][0] / kv[1][1]))
    # similarity of pairs: same scene vs consecutive scenes (what the time gate does not separate)
    from photocritic.features import EmbeddingCache

    emb = model.embed_paths(paths, EmbeddingCache(None))[1].astype(np.float64)
    emb -= emb.mean(0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    idx = {Path(p).name: i for i, p in enumerate(paths)}
    same = [float(emb[idx[a]] @ emb[idx[b]]) for ns in multi.values() for i, a in enumerate(ns) for b in ns[i + 1:]]
    groups = sorted({truth[n]["group"] for n in names})
    by_g = {g: [n for n in names if truth[n]["group"] == g] for g in groups}
    other = [float(emb[idx[by_g[g][0]]] @ emb[idx[by_g[h][0]]]) for g, h in zip(groups, groups[1:])]
    ratio = float(np.median(np.array(cull_s) / np.array(score_s)))
    out = {
        "photos": len(paths), "scenes": len(groups), "multi_frame_scenes": len(multi), "model": "lite",
        "precision": model.precision, "options": asdict(opts),
        "adjusted_rand_index": round(float(ari), 4), "pick_is_undegraded": round(pick_ok, 4), "pick_by_score_alone_in_true_groups": round(by_score, 4),
        "groups_found": result.groups, "wrong_picks_by_edit_of_the_frame_ranked_first": wrong,
        "wrong_picks_by_source_photo": {s: f"{w} of {n}" for s, (w, n) in by_source.items()},
        "score_seconds": [round(x, 2) for x in score_s], "cull_seconds": [round(x, 2) for x in cull_s],
        "cull_over_score_median": round(ratio, 3),
        "similarity_same_scene_p5_p50": [round(float(np.percentile(same, q)), 3) for q in (5, 50)],
        "similarity_next_scene_p50_p95": [round(float(np.percentile(other, q)), 3) for q in (50, 95)],
    }
    print(f"ARI {ari:.3f}; undegraded frame picked in {pick_ok:.1%} of {len(multi)} bursts "
          f"({by_score:.1%} by score alone in the true groups); "
          f"cull / score {ratio:.2f}x; groups found {result.groups} (true {len(groups)})")
    print(f"wrong picks, by the edit of the frame ranked first instead: {wrong}")
    print("wrong picks by source photo (of its bursts): "
          + ", ".join(f"{s} {w}/{n}" for s, (w, n) in by_source.items()))
    print(f"cosine, same scene: p5 {out['similarity_same_scene_p5_p50'][0]}, median "
          f"{out['similarity_same_scene_p5_p50'][1]}; consecutive scenes: median "
          f"{out['similarity_next_scene_p50_p95'][0]}, p95 {out['similarity_next_scene_p50_p95'][1]}")
    write_results(args.output, **out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
