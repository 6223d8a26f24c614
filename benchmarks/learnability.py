"""Learnability on the synthetic aesthetic world: held-out SRCC / PLCC /
accuracy / EMD (with bootstrap CIs) of every trainable method, the
untrained prior (the first ``lite``, trained on degradation pairs without
ratings: benchmarks/assets/lite-v1), the shipped ``lite`` (trained on a
world of this generator, so neither a prior nor held out) and zero-shot on
a tiny random CLIP; ``linear`` on
each available backbone side by side (the shape of Hentschel et al.'s
Table 2).

    python benchmarks/learnability.py [--n 2000] [--finetune-epochs 6]
    python benchmarks/learnability.py --part mmlq [--n 2000]
    python benchmarks/learnability.py --part priors --n 2000
    python benchmarks/learnability.py --part retrieval-ceiling --seed 1

A heads run on a world of another size than the file's keeps the file's
run under ``heads_n{size}``; ``--part priors`` adds the untrained rows to
such a kept run.

``--part mmlq``: MMLQ's modes on the same kind of world (image tokens of
EfficientNet-Lite0, comment tokens of MiniLM): ``image``, ``comments``,
``image+comments``, and ``image`` + retrieved comments (trained with the
comments of half the training images, the rest retrieved; every test image
gets retrieved comments only). Each row is trained with five seeds
(``--train-seeds``): the first seed's figures, and the mean SRCCs compared
with a paired bootstrap. Written under ``mmlq`` in the same file.
``--trained-on-retrieved-k K...`` adds rows trained with every training
image's comments retrieved from other source photos (MMLQ's
``train_on_retrieved``); ``--modes`` runs only some rows (``image`` among
them), under another ``--key``.

``--part mmlq --folds K``: the same modes cross-validated by source photo
on one world (every photo a test photo once; the mean over folds of each
fold's SRCC, paired CIs inside folds), under ``mmlq_folds_world{SEED}``.

``--part retrieval-ceiling``: on the same folds, with no network trained,
how much neighbours found by the comment bank's search could add to an
image ridge: their true mean votes, or what their comments say (a ridge on
MiniLM embeddings), under ``retrieval_ceiling_world{SEED}``.

Needs >= 30 source photos: Debian's wallpaper packages (see
photocritic.data.synthetic.INSTALL_HINT) plus scikit-image's.
Writes benchmarks/results/learnability.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, world_summary, write_results  # noqa: E402

import photocritic  # noqa: E402
from photocritic.data.datasets import load_dataset  # noqa: E402
from photocritic.data.synthetic import find_sources, synthesize  # noqa: E402
from photocritic.evaluation import compute_metrics, json_safe  # noqa: E402
from photocritic.training.run import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "learnability.json"
LITE_V1 = Path(__file__).resolve().parent / "assets" / "lite-v1"
PRIOR = "lite version 1 (untrained prior: degradation pairs, no ratings)"


def by_row(rows) -> np.ndarray:
    """Each row's score, NaN where the row failed (one entry per input)."""
    return np.array([r.score if r.status == "ok" else np.nan for r in rows], dtype=np.float64)


def evaluate(model, test, store) -> dict:
    """Held-out metrics; the predictions by test row (NaN where unscored) under "_pred"."""
    rows = model.score(test.image_paths(), cache=store)
    ok = [i for i, r in enumerate(rows) if r.status == "ok"]
    pred = np.array([rows[i].score for i in ok])
    dist = (np.array([rows[i].distribution for i in ok]) if rows[0].distribution is not None else None)
    m = compute_metrics(pred, test.mean[ok], True, dist, test.distribution[ok], n_boot=1000, seed=0)
    keep = {k: m.get(k) for k in ("n", "srcc", "plcc", "accuracy", "emd_r2")}
    keep["ci95"] = m.get("ci95")
    keep = json_safe(keep)
    keep["_pred"] = by_row(rows)
    return keep


def srcc_gain(pred: np.ndarray, ref: np.ndarray, true: np.ndarray) -> dict:
    """SRCC of ``pred`` minus SRCC of ``ref`` on the same test images, with a
    paired bootstrap 95 % CI (both resampled with the same images)."""
    return seed_mean_gain([pred], [ref], true)


def seed_mean_gain(preds: list[np.ndarray], refs: list[np.ndarray], true: np.ndarray) -> dict:
    """The mean SRCC of ``preds`` (models trained with different seeds)
    minus that of ``refs``, with a paired bootstrap 95 % CI: every model is
    scored on the same resampled images (those every model scored)."""
    from photocritic.metrics import bootstrap_ci, srcc

    cols = np.stack([*preds, *refs], 1)
    both = ~np.isnan(cols).any(1)
    x, t, k = cols[both], true[both], len(preds)

    def gain(x, y):
        return float(np.mean([srcc(x[:, j], y) for j in range(k)])
                     - np.mean([srcc(x[:, j], y) for j in range(k, x.shape[1])]))

    lo, hi = bootstrap_ci(gain, x, t, n_boot=1000, seed=0)
    return {"value": round(gain(x, t), 4), "ci95": [round(lo, 4), round(hi, 4)]}


def untrained_rows(tiny_clip: Path) -> list:
    """(label, model) of the rows trained on no rating of the world: the
    untrained prior, the shipped lite and zero-shot on the tiny CLIP."""
    return [(PRIOR, photocritic.load(str(LITE_V1))),
            ("lite (shipped; trained on this generator's ratings, on these source photos)",
             photocritic.load("lite")),
            ("zero-shot (vila prompts)", photocritic.zoo.zero_shot(tiny_clip))]


def priors_part(args) -> int:
    """Only the untrained rows, on the world of --n and --seed, written
    under heads_n{n}.priors (for a world whose trained rows an earlier run
    measured)."""
    import json

    from photocritic.encoders.tiny import save_random_clip

    tmp = Path(tempfile.mkdtemp(prefix="pc-learn-priors-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    world = synthesize(tmp / "world", args.n, seed=args.seed, sources=find_sources(), min_sources=30)
    test = load_dataset(tmp / "world").split("test")[0]
    rows = []
    for label, model in untrained_rows(save_random_clip(tmp / "tiny-clip", size="tiny", kind="clip")):
        m = evaluate(model, test, tmp / "features.sqlite")
        m.pop("_pred")
        rows.append({"method": label, **m})
        print(f"{label:<40} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} acc {m['accuracy']:.3f}")
    results_file = Path(args.results)
    data = json.loads(results_file.read_text()) if results_file.exists() else {}
    data.setdefault(f"heads_n{args.n}", {})["priors"] = {
        "date": time.strftime("%Y-%m-%d"), "seed": args.seed, "test_images": len(test),
        "world": world_summary(world), "results": rows}
    results_file.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {results_file} (heads_n{args.n}.priors)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-epochs", type=int, default=6,
                    help="a cap for the CPU budget (the method itself has none)")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--part", choices=["heads", "mmlq", "priors", "retrieval-ceiling"], default="heads",
                    help="priors: only the untrained rows, kept under heads_n{N}; retrieval-ceiling: what "
                         "neighbours' votes or comments could add to an image ridge (--folds, default 5)")
    ap.add_argument("--retrieve", type=int, default=3, help="--part mmlq: comments of K nearest images")
    ap.add_argument("--param", action="append", default=[], help="--part mmlq: MMLQ NAME=VALUE")
    ap.add_argument("--trained-on-retrieved-k", type=int, nargs="*", default=[], metavar="K",
                    help="--part mmlq: rows trained with every training image's comments retrieved "
                         "(train_on_retrieved, group_by source), one per K")
    ap.add_argument("--modes", nargs="+", metavar="MODE",
                    help="--part mmlq: only these rows (image among them; the others' checks are left out)")
    ap.add_argument("--train-seeds", type=int, default=5,
                    help="--part mmlq: each row is trained with seeds --seed .. --seed+N-1 (initialisation and "
                         "batch order; the world stays that of --seed), and the rows' mean SRCCs are compared too")
    ap.add_argument("--folds", type=int, default=0,
                    help="--part mmlq: cross-validate the modes by source photo over K folds of one world "
                         "(under mmlq_folds_world{SEED} unless --key is given)")
    ap.add_argument("--key", default=None, help="--part mmlq: where in the results file")
    ap.add_argument("--results", default=str(RESULTS), help="the results file (default: %(default)s)")
    args = ap.parse_args()
    print(machine_line())
    if args.part == "mmlq":
        if args.folds:
            args.key = args.key or f"mmlq_folds_world{args.seed}"
            return mmlq_folds_part(args)
        args.key = args.key or "mmlq"
        return mmlq_part(args)
    if args.part == "priors":
        return priors_part(args)
    if args.part == "retrieval-ceiling":
        args.folds = args.folds or 5
        args.key = args.key or f"retrieval_ceiling_world{args.seed}"
        return retrieval_ceiling_part(args)
    tmp = Path(tempfile.mkdtemp(prefix="pc-learn-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    sources = find_sources()
    t0 = time.perf_counter()
    world = synthesize(tmp / "world", args.n, seed=args.seed, sources=sources, min_sources=30)
    print(f"world: {world} in {time.perf_counter() - t0:.0f} s")
    store = tmp / "features.sqlite"
    ds = load_dataset(tmp / "world")
    test = ds.split("test")[0]
    common = {"dataset": str(tmp / "world"), "split": "train", "val_split": "val", "cache": str(store),
              "quiet": True, "seed": args.seed}
    runs = [("linear", "efficientnet-lite0", {}),
            ("linear (ridge auto, pooled MLSP view)", "efficientnet-lite0",
             {"ridge": "auto", "view": "image.pooled"}),
            ("nima", "efficientnet-lite0", {}),
            ("mlp", "efficientnet-lite0", {}),
            ("vila-r", "efficientnet-lite0", {})]
    from photocritic.encoders.tiny import save_random_clip

    tiny_clip = save_random_clip(tmp / "tiny-clip", size="tiny", kind="clip")
    tiny_siglip = save_random_clip(tmp / "tiny-siglip", size="tiny", kind="siglip")
    runs += [("linear", str(tiny_clip), {}), ("linear", str(tiny_siglip), {})]
    if not args.skip_finetune:
        runs.append(("finetune", "efficientnet-lite0", {"epochs": args.finetune_epochs, "batch_size": 64}))
    results, preds = [], {}
    for label, backbone, params in runs:
        method = label.split(" ")[0]
        out = tmp / f"m{len(results)}"
        t1 = time.perf_counter()
        res = train({**common, "method": method, "backbone": backbone, "output": str(out), "params": params},
                    log=lambda m: None)
        secs = time.perf_counter() - t1
        model = photocritic.load(str(out))
        m = evaluate(model, test, store)
        preds[label, backbone] = m.pop("_pred")
        name = {str(tiny_clip): "tiny random CLIP", str(tiny_siglip): "tiny random SigLIP"}.get(backbone, backbone)
        row = {"method": label, "backbone": name, "train_seconds": round(secs, 1), **m,
               "notes": res.notes, "best_epoch": res.metrics.get("best_epoch") or
               (res.metrics.get("history") or {}).get("best_epoch")}
        results.append(row)
        print(f"{label:<40} {name:<20} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} acc {m['accuracy']:.3f}"
              + (f" EMD {m['emd_r2']:.4f}" if m.get("emd_r2") is not None else "") + f"  ({secs:.0f} s)")
    # the untrained prior: the first lite (version 1), a VILA-R head trained on self-supervised
    # degradation pairs of 13 real photos, no ratings (benchmarks/assets/lite-v1). The shipped lite
    # (configs/lite.yaml) is trained on this generator's ratings, inside each photo, on the same
    # source photos: its row is neither a prior nor held out
    for label, model in untrained_rows(tiny_clip):
        m = evaluate(model, test, store)
        preds[label, None] = m.pop("_pred")
        results.append({"method": label, "backbone": "efficientnet-lite0" if "lite" in label else
                        "tiny random CLIP", **m})
        print(f"{label:<40} {results[-1]['backbone']:<20} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} "
              f"acc {m['accuracy']:.3f}")
    prior = next(r for r in results if r["method"] == PRIOR)
    shipped = next(r for r in results if r["method"].startswith("lite (shipped"))
    trained = [r for r in results if r["backbone"] == "efficientnet-lite0" and not r["method"].startswith("lite")]
    for r, (key, p) in zip(results, preds.items()):  # paired: the same test images, the same resamples
        if key[0] != PRIOR:
            r["srcc_minus_prior"] = srcc_gain(p, preds[PRIOR, None], test.mean)
    checks = {"every trained method beats the untrained lite prior (version 1)":
              {r["method"]: r["srcc"] > prior["srcc"] for r in trained},
              "beats the shipped lite (not held out; for information)":
              {r["method"]: r["srcc"] > shipped["srcc"] for r in trained}}
    ft = next((r for r in results if r["method"] == "finetune"), None)
    lin = next(r for r in results if r["method"] == "linear" and r["backbone"] == "efficientnet-lite0")
    if ft:
        checks["finetune beats linear"] = ft["srcc"] > lin["srcc"]
        ft["srcc_minus_linear"] = srcc_gain(preds["finetune", "efficientnet-lite0"],
                                            preds["linear", "efficientnet-lite0"], test.mean)
    print(checks)
    import json

    results_file = Path(args.results)
    kept = {}  # the mmlq part (written by --part mmlq) and earlier worlds' runs stay
    if results_file.exists():
        old = json.loads(results_file.read_text())
        kept = {k: v for k, v in old.items() if k.startswith(("mmlq", "heads_n"))}
        size = old.get("world", {}).get("images")
        if size and size != world["images"]:  # a run on a world of another size: kept under its size
            kept[f"heads_n{size}"] = {k: old[k] for k in ("cpu_model", "date", "world", "seed", "test_images",
                                                         "results", "checks", "finetune_epoch_cap") if k in old}
    write_results(results_file, world=world_summary(world), seed=args.seed,
                  test_images=len(test), results=results, checks=checks,
                  finetune_epoch_cap=None if args.skip_finetune else args.finetune_epochs, **kept)
    print(f"wrote {results_file}")
    return 0


def comments_of(comments_all: dict, ids) -> dict:
    """The entries of ``comments_all`` (keyed by image path) of the images ``ids``."""
    keep = set(ids)
    return {k: v for k, v in comments_all.items() if Path(k).stem in keep}


def save_entry(results: str, key: str, entry: dict) -> None:
    """``entry`` under ``key`` of the results file, the other keys kept."""
    import json

    results_file = Path(results)
    data = json.loads(results_file.read_text()) if results_file.exists() else {}
    data[key] = entry
    results_file.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {results_file} ({key})")


def sibling_retrieval(results, preds, models, test, comments_all, store) -> dict:
    """The retrieval models when the bank also holds the test images that
    have comments (every other test image): the rest, scored with comments
    retrieved from the training bank and from those (`score
    --retrieve-from-inputs`), against `image` on the same images. Other
    edits of an unseen photo then have comments, as other frames of a new
    shoot might; the model was trained on none of these photos."""
    given_ids = set(test.ids[::2])
    given = comments_of(comments_all, given_ids)
    query = np.arange(1, len(test), 2)
    true = test.mean[query]
    image = preds[0][query]
    out = {}
    for r in results:
        if "retrieved" not in r["mode"]:
            continue
        rows = models[r["mode"]].score(test.image_paths(), cache=str(store), ids=list(test.ids), comments=given,
                                       bank_from_inputs=True)
        p = by_row(rows)[query]
        ok = ~np.isnan(p)
        m = compute_metrics(p[ok], true[ok], True, n_boot=1000, seed=0)
        src = [s for srcs in rows.retrieved.values() for s in srcs]
        out[r["mode"]] = json_safe({
            "n": int(ok.sum()), "srcc": m["srcc"], "plcc": m["plcc"], "ci95": m.get("ci95"),
            "image_srcc": compute_metrics(image[ok], true[ok], True, n_boot=0)["srcc"],
            "srcc_minus_image": srcc_gain(p, image, true),
            "sources_from_test_images": round(sum(s in given_ids for s in src) / max(len(src), 1), 3)})
        print(f"{r['mode']:<36} bank + commented test images: SRCC {m['srcc']:.3f} on {ok.sum()} images, "
              f"minus image's: {out[r['mode']]['srcc_minus_image']}")
    return {"protocol": "test images with comments: every other one (their comments join the bank); "
                        "scored: the others, every one with retrieved comments only", "results": out}


def fold_files(world: Path, k: int, seed: int) -> list[Path]:
    """``labels_fold{f}.csv`` beside the world's labels.csv, one per fold:
    the source photos split into ``k`` groups (a fixed permutation); fold f
    tests on group f, validates on the first tenth of the sources of group
    f+1 and trains on the rest. Every photo is tested in exactly one fold."""
    import csv

    with open(world / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    s_col, split_col = header.index("source"), header.index("split")
    names = sorted({r[s_col] for r in body})
    order = [names[i] for i in np.random.default_rng([seed, 23]).permutation(len(names))]
    groups = [order[g::k] for g in range(k)]
    n_val = max(1, round(0.1 * len(names)))
    out = []
    for f in range(k):
        test, val = set(groups[f]), set(groups[(f + 1) % k][:n_val])
        path = world / f"labels_fold{f}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            for r in body:
                r = list(r)
                r[split_col] = "test" if r[s_col] in test else "val" if r[s_col] in val else "train"
                w.writerow(r)
        out.append(path)
    return out


def fold_mean_gain(preds: list[np.ndarray], refs: list[np.ndarray], true: list[np.ndarray],
                   n_boot: int = 1000, seed: int = 0) -> dict:
    """The mean over folds of the per-fold SRCC of ``preds[f]`` minus that of
    ``refs[f]`` (each fold's test images scored by that fold's models), with
    a paired bootstrap 95 % CI: images resampled inside each fold, both
    models scored on the same resample. Only the images both scored count
    (NaN: not scored). ``per_fold``: each fold's difference."""
    from photocritic.metrics import srcc

    both = [~(np.isnan(p) | np.isnan(r)) for p, r in zip(preds, refs)]
    preds, refs, true = ([x[m] for x, m in zip(xs, both)] for xs in (preds, refs, true))

    def per_fold(idx):
        return [srcc(p[i], t[i]) - srcc(r[i], t[i]) for p, r, t, i in zip(preds, refs, true, idx)]

    folds = per_fold([np.arange(len(t)) for t in true])
    rng = np.random.default_rng(seed)
    boots = [np.mean(per_fold([rng.integers(0, len(t), len(t)) for t in true])) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"value": round(float(np.mean(folds)), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "per_fold": [round(float(x), 4) for x in folds]}


def mmlq_folds_part(args) -> int:
    """``--part mmlq --folds K``: the modes cross-validated by source photo
    on one world, so that every photo is a test photo once: one test split
    of 7 photos moves a mode's SRCC by more than the modes differ (image
    alone 0.17-0.50 on three worlds). Each fold trains every mode with the
    same seeds; a mode's figure is the mean over folds of its per-fold
    SRCC, compared with a paired bootstrap inside each fold."""
    import json

    tmp, world, store, comments_all = mmlq_world(args, "pc-learn-mmlq-folds-")
    t0 = time.perf_counter()
    params = mmlq_params(args)
    # mode -> (MMLQ options, training comments: all / half / none, train --group-by, siblings): with
    # siblings, a new shoot in which some frames have comments: every other test image's comments join
    # the bank, the others are scored with retrieved comments only (run only when named in --modes)
    retrieved = {"inputs": "image+comments", "train_on_retrieved": True}
    rows = {"image": ({"inputs": "image"}, None, None, False),
            "comments": ({"inputs": "comments"}, "all", None, False),
            "image+comments": ({"inputs": "image+comments"}, "all", None, False),
            f"image + retrieved comments (k={args.retrieve}, group_by source)":
                ({"inputs": "image+comments", "retrieve_comments": args.retrieve}, "half", "source", False),
            **{f"image + retrieved comments (k={k}, {label})":
               ({**retrieved, "retrieve_comments": k}, "all", group_by, siblings)
               for label, group_by, siblings in (
                   # trained as such an image reads: other versions of its own photo among its neighbours
                   ("trained on retrieved, commented test images in the bank", None, True),
                   # trained and scored as an unseen photo reads: other photos' comments (the training bank)
                   ("trained on retrieved from other photos", "source", False),
                   # the same training, with the commented test images in the bank at test time
                   ("trained on retrieved from other photos, commented test images in the bank", "source", True))
               for k in args.trained_on_retrieved_k}}
    modes = args.modes or [m for m, row in rows.items() if not row[3]]
    unknown = [m for m in modes if m not in rows]
    if unknown or "image" not in modes:
        raise SystemExit(f"--modes: {unknown or 'image'} (must include image; rows: {list(rows)})")
    preds = {m: [] for m in modes}  # mode -> per fold: (seeds, test images) predictions
    truth, folds = [], []
    for f, labels in enumerate(fold_files(tmp / "world", args.folds, args.seed)):
        ds = load_dataset(labels)
        train_set, test = ds.split("train")[0], ds.split("test")[0]
        truth.append(test.mean)
        (tmp / f"half{f}.json").write_text(json.dumps(comments_of(comments_all, train_set.ids[::2])))
        files = {"all": str(tmp / "world" / "comments.json"), "half": str(tmp / f"half{f}.json")}
        given = comments_of(comments_all, test.ids[::2])  # the siblings rows' commented test images
        fold = {"fold": f, "test_images": len(test), "train_images": len(train_set), "srcc": {}, "best_epochs": {}}
        for mode in modes:
            opts, which, group_by, siblings = rows[mode]
            seed_preds, epochs = [], []
            for extra in range(args.train_seeds):
                out = tmp / f"f{f}-{len(fold['srcc'])}-{extra}"
                res = train({"dataset": str(labels), "split": "train", "val_split": "val", "cache": str(store),
                             "quiet": True, "method": "mmlq", "backbone": "efficientnet-lite0",
                             "seed": args.seed + extra, "params": {**params, **opts},
                             "comments": files.get(which), "output": str(out), "group_by": group_by},
                            log=lambda m: None)
                model = photocritic.load(str(out))
                if siblings:
                    p = by_row(model.score(test.image_paths(), cache=str(store), ids=list(test.ids),
                                           comments=given, bank_from_inputs=True))
                    p[::2] = np.nan  # the commented ones: in the bank, not scored
                else:
                    p = by_row(model.score(test.image_paths(), cache=str(store), ids=list(test.ids),
                                           comments={} if "retrieve_comments" in opts
                                           else (comments_all if which == "all" else None)))
                seed_preds.append(p)
                epochs.append((res.metrics.get("history") or {}).get("best_epoch"))
                shutil.rmtree(out, ignore_errors=True)
            preds[mode].append(np.stack(seed_preds))
            fold["srcc"][mode] = [round(compute_metrics(p[~np.isnan(p)], test.mean[~np.isnan(p)], True,
                                                        n_boot=0)["srcc"], 4) for p in seed_preds]
            fold["best_epochs"][mode] = epochs
            print(f"fold {f} ({len(test)} test images) {mode:<40} SRCC {fold['srcc'][mode]} "
                  f"({time.perf_counter() - t0:.0f} s)")
        folds.append(fold)

    def by_seed(mode):  # per training seed, that seed's predictions in every fold
        return [[p[j] for p in preds[mode]] for j in range(args.train_seeds)]

    results = []
    for mode in modes:
        per_fold = [float(np.mean(fd["srcc"][mode])) for fd in folds]
        row = {"mode": mode, "mean_srcc_over_folds": round(float(np.mean(per_fold)), 4),
               "fold_srcc": [round(x, 4) for x in per_fold]}
        if mode != "image" and any(np.isnan(p).any() for p in preds[mode]):  # scored on some images only
            row["image_on_the_same_images"] = round(float(np.mean([
                np.mean([compute_metrics(i[~np.isnan(p)], t[~np.isnan(p)], True, n_boot=0)["srcc"]
                         for i, p in zip(ip, mp)])
                for ip, mp, t in zip(preds["image"], preds[mode], truth)])), 4)
        pairs = [("image", "minus_image")] + ([("comments", "minus_comments")] if mode == "image+comments" else [])
        for ref, key in pairs:
            if mode != ref and ref in preds:
                gains = [fold_mean_gain(a, b, truth, seed=j)
                         for j, (a, b) in enumerate(zip(by_seed(mode), by_seed(ref)))]
                row[f"srcc_{key}"] = gains[0] if len(gains) == 1 else {
                    "value": round(float(np.mean([g["value"] for g in gains])), 4), "per_seed": gains}
                row[f"folds_won_{key}"] = int(np.sum(np.mean([g["per_fold"] for g in gains], 0) > 0))
        results.append(row)
        print(f"{mode:<40} mean SRCC over folds {row['mean_srcc_over_folds']:.3f} "
              + " ".join(f"{k}={v}" for k, v in row.items() if k.startswith(("srcc_", "folds_won"))))
    mean = {r["mode"]: r["mean_srcc_over_folds"] for r in results}
    checks = {**({"image+comments beats image (mean over folds)": mean["image+comments"] > mean["image"]}
                 if "image+comments" in mean else {}),
              **({"image+comments beats comments (mean over folds)": mean["image+comments"] > mean["comments"]}
                 if "image+comments" in mean and "comments" in mean else {}),
              **{f"{r['mode']} beats image (mean over folds, on the same images)": r["srcc_minus_image"]["value"] > 0
                 for r in results if "retrieved" in r["mode"]},
              # the same comparisons, met only where the paired 95 % CI lies above 0 (one training seed)
              **{f"{r['mode']} beats {ref} beyond noise (paired 95 % CI above 0)": r[f"srcc_minus_{ref}"]["ci95"][0] > 0
                 for r in results for ref in ("image", "comments") if "ci95" in r.get(f"srcc_minus_{ref}", {})
                 and (r["mode"] == "image+comments" or "retrieved" in r["mode"])}}
    print(checks)
    from photocritic.device import cpu_info

    save_entry(args.results, args.key, {
        "cpu": cpu_info()["cpu_model"], "date": time.strftime("%Y-%m-%d"), "seed": args.seed,
        "folds": args.folds, "train_seeds": args.train_seeds, "params": params,
        "protocol": "cross-validation by source photo: every photo tested once; mean over folds "
                    "of the per-fold SRCC; CIs: images resampled inside each fold",
        "world": world_summary(world), "text_encoder": "minilm", "backbone": "efficientnet-lite0",
        "results": results, "folds_detail": folds, "checks": checks})
    return 0


def neighbour_mean(bank, queries: np.ndarray, values: dict, k: int) -> np.ndarray:
    """Per query, the mean of ``values`` (bank id -> number) over its ``k``
    nearest bank images (the comment bank's own search)."""
    return np.array([np.mean([values[i] for i in r.sources]) for r in bank.retrieve(queries, k)])


def retrieval_ceiling_part(args) -> int:
    """``--part retrieval-ceiling``: how much could comments retrieved from
    other photos add to an image model on this world? Cross-validated by
    source photo (the folds of ``--folds``), with no network trained: a ridge
    on the test image's ``image.pooled`` features stands for ``image``; its
    k nearest training images in the comment bank's own search (the space
    ``--retrieve-comments`` uses) bring either their true mean votes (what
    perfect comments could say) or what their comments say (a ridge on the
    MiniLM embedding of each image's comments, cross-fitted by source photo
    so that no image's reading saw its own photo's labels). Each signal is
    added to the image ridge's standardised prediction at weights 0.25, 0.5
    and 1 (chosen here on the test folds: an optimistic ceiling). The same
    again with the commented test images in the bank, as the folds part's
    sibling rows have it: every other test image joins the bank (its
    comments read by a ridge fitted on all the training images), and the
    rest retrieve from it, other versions of their own photo among them."""
    import torch
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from photocritic.device import cpu_info
    from photocritic.encoders.text import text_encoder
    from photocritic.features import EmbeddingCache
    from photocritic.metrics import srcc
    from photocritic.models import Critic
    from photocritic.retrieval import CommentBank
    from photocritic.scoremap import ScoreMap
    from photocritic.training.run import label_column
    from photocritic.zoo import backbone_spec

    tmp, world, store, comments_all = mmlq_world(args, "pc-learn-ceiling-")
    ds = load_dataset(tmp / "world")
    ids = list(ds.ids)
    groups = label_column(str(tmp / "world"), "source", ids)
    critic = Critic(backbone_spec("efficientnet-lite0"), None, ScoreMap()).configure(device="cpu", precision="fp32")
    with EmbeddingCache(store) as cache:
        rows, vecs = critic.with_view("image.pooled").embed_paths(ds.image_paths(), cache)
    if len(vecs) != len(ids):
        raise SystemExit(f"{len(ids) - len(vecs)} images did not read")
    x = np.asarray(vecs, np.float32)
    texts = {Path(k).stem: v for k, v in comments_all.items()}
    with torch.no_grad():
        c = text_encoder("minilm").encode_text([" ".join(texts[i]) for i in ids]).numpy()
    y, pos = ds.mean, {i: j for j, i in enumerate(ids)}
    ks, weights = (3, 8, 32), (0.25, 0.5, 1.0)
    banks = ("other photos", "commented test images in the bank")
    image, truth = {b: [] for b in banks}, {b: [] for b in banks}
    signals: dict = {}  # (bank, signal) -> per fold: the queries' neighbour means
    folds = []
    for f, labels in enumerate(fold_files(tmp / "world", args.folds, args.seed)):
        d = load_dataset(labels)
        tr = np.array([pos[i] for i in d.split("train")[0].ids])
        te = np.array([pos[i] for i in d.split("test")[0].ids])
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        ridge = RidgeCV(alphas=np.logspace(0, 5, 11)).fit((x[tr] - mu) / sd, y[tr])
        p = ridge.predict((x[te] - mu) / sd)
        reader = RidgeCV(alphas=np.logspace(-2, 4, 13))
        read = cross_val_predict(reader, c[tr], y[tr], cv=GroupKFold(5), groups=groups[tr])
        own = reader.fit(c[tr], y[tr]).predict(c[te])  # test photos: unseen by this reader
        fold = {"fold": f, "test_images": len(te), "image_ridge_srcc": round(srcc(p, y[te]), 4),
                "own_comments_ridge_srcc": round(srcc(own, y[te]), 4)}
        # other photos: every test image retrieves from the training images; with the commented test
        # images in the bank (every other one, as the folds part's sibling rows): the others retrieve
        # from the training images and those, other versions of their own photo among them
        given, query = te[::2], te[1::2]
        setups = {banks[0]: (tr, te, np.arange(len(te)), read),
                  banks[1]: (np.concatenate([tr, given]), query, np.arange(1, len(te), 2),
                             np.concatenate([read, own[::2]]))}
        for b, (members, queries, at, reading) in setups.items():
            bank = CommentBank([ids[j] for j in members], x[members], {ids[j]: texts[ids[j]] for j in members})
            image[b].append(p[at])
            truth[b].append(y[queries])
            for k in ks:
                for name, vals in ((f"true votes, k={k}", y[members]), (f"comments read, k={k}", reading)):
                    got = neighbour_mean(bank, x[queries], dict(zip((ids[j] for j in members), vals)), k)
                    signals.setdefault((b, name), []).append(got)
                    fold[f"{name} alone ({b})"] = round(srcc(got, y[queries]), 4)
        folds.append(fold)
        print(fold, flush=True)

    def z(v):
        return (v - v.mean()) / v.std()

    results = [{"row": "image (ridge on image.pooled)",
                "mean_srcc_over_folds": round(float(np.mean([fd["image_ridge_srcc"] for fd in folds])), 4)},
               {"row": "own comments (ridge on MiniLM), for scale",
                "mean_srcc_over_folds": round(float(np.mean([fd["own_comments_ridge_srcc"] for fd in folds])), 4)}]
    for (b, name), per_fold in signals.items():
        row = {"row": f"neighbours' {name}", "bank": b, "queries": "every test image" if b == banks[0] else
               "every other test image (the rest are in the bank)",
               "alone_mean_srcc_over_folds": round(float(np.mean([fd[f"{name} alone ({b})"] for fd in folds])), 4),
               "image_on_the_same_images": round(float(np.mean([srcc(i, t) for i, t in zip(image[b], truth[b])])),
                                                 4)}
        for w in weights:
            mixed = [z(i) + w * z(sig) for i, sig in zip(image[b], per_fold)]
            row[f"image + {w} x neighbours, minus image"] = fold_mean_gain(mixed, image[b], truth[b])
        results.append(row)
        print(b, row["row"], row["alone_mean_srcc_over_folds"],
              {w: row[f"image + {w} x neighbours, minus image"]["value"] for w in weights}, flush=True)
    save_entry(args.results, args.key, {
        "cpu": cpu_info()["cpu_model"], "date": time.strftime("%Y-%m-%d"), "seed": args.seed, "folds": args.folds,
        "protocol": "cross-validation by source photo; image: ridge on the test image's image.pooled features; "
                    "neighbours: its k nearest training images in the comment bank's search (bank 'other "
                    "photos'), or, for every other test image, its k nearest among the training images and "
                    "the other test images (bank 'commented test images in the bank'); their true mean "
                    "votes, or their comments read by a ridge on MiniLM embeddings (cross-fitted by source "
                    "photo over the training images; fitted on all of them for test images); mixed: "
                    "z(image) + w z(neighbours), w chosen on the test folds (optimistic)",
        "world": world_summary(world), "results": results, "folds_detail": folds})
    return 0


def mmlq_params(args) -> dict:
    """``--param NAME=VALUE`` options of MMLQ (numbers and booleans parsed)."""
    import json

    params = {}
    for item in args.param:
        k, _, v = item.partition("=")
        params[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
    return params


def mmlq_world(args, prefix: str):
    """A fresh world of at least 30 source photos in a temporary folder
    (removed at exit): the folder, the world's summary, the feature store's
    path and the world's comments by image path."""
    import json

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    t0 = time.perf_counter()
    world = synthesize(tmp / "world", args.n, seed=args.seed, sources=find_sources(), min_sources=30)
    print(f"world: {world} in {time.perf_counter() - t0:.0f} s")
    comments_all = json.loads((tmp / "world" / "comments.json").read_text())
    return tmp, world, tmp / "features.sqlite", comments_all


def mmlq_part(args) -> int:
    import json

    tmp, world, store, comments_all = mmlq_world(args, "pc-learn-mmlq-")
    ds = load_dataset(tmp / "world")
    train_set, test = ds.split("train")[0], ds.split("test")[0]
    (tmp / "half.json").write_text(json.dumps(comments_of(comments_all, train_set.ids[::2])))
    common = {"dataset": str(tmp / "world"), "split": "train", "val_split": "val", "cache": str(store),
              "quiet": True, "seed": args.seed, "method": "mmlq", "backbone": "efficientnet-lite0"}
    params = mmlq_params(args)
    runs = [("image", {"inputs": "image"}, None),
            ("comments", {"inputs": "comments"}, "all"),
            ("image+comments", {"inputs": "image+comments"}, "all"),
            (f"image + retrieved comments (k={args.retrieve})",
             {"inputs": "image+comments", "retrieve_comments": args.retrieve}, "half"),
            # training images retrieve only from other source photos, as the unseen test photos must
            (f"image + retrieved comments (k={args.retrieve}, group_by source)",
             {"inputs": "image+comments", "retrieve_comments": args.retrieve, "group_by": "source"}, "half"),
            # every training image reads retrieved comments (its own are in the bank only), as a test image does
            *[(f"image + retrieved comments (k={k}, group_by source, trained on retrieved)",
               {"inputs": "image+comments", "retrieve_comments": k, "group_by": "source",
                "train_on_retrieved": True}, "all") for k in args.trained_on_retrieved_k]]
    if args.modes:
        unknown = [m for m in args.modes if m not in [r[0] for r in runs]]
        if unknown or "image" not in args.modes:
            raise SystemExit(f"--modes: {unknown or 'image'} (must include image; rows: {[r[0] for r in runs]})")
        runs = [r for r in runs if r[0] in args.modes]
    files = {"all": str(tmp / "world" / "comments.json"), "half": str(tmp / "half.json")}
    results, preds, models, seed_preds = [], [], {}, []
    for label, opts, which in runs:
        opts = dict(opts)
        group_by = opts.pop("group_by", None)
        runs_of_row = []
        for extra in range(args.train_seeds):  # seed args.seed first: the row's own figures
            out = tmp / f"q{len(results)}-{extra}"
            t1 = time.perf_counter()
            res = train({**common, "seed": args.seed + extra, "params": {**params, **opts},
                         "comments": files.get(which), "output": str(out), "group_by": group_by}, log=lambda m: None)
            secs = time.perf_counter() - t1
            model = photocritic.load(str(out))
            # test images: their own comments, except in the retrieval rows (every one retrieved)
            retrieves = "retrieve_comments" in opts
            rows = model.score(test.image_paths(), cache=str(store), ids=list(test.ids),
                               comments={} if retrieves else (comments_all if which == "all" else None))
            runs_of_row.append((res, secs, model, rows))
        seed_preds.append([by_row(r[3]) for r in runs_of_row])
        res, secs, model, rows = runs_of_row[0]
        models[label] = model
        ok = [i for i, r in enumerate(rows) if r.status == "ok"]
        preds.append(by_row(rows))
        m = compute_metrics(np.array([rows[i].score for i in ok]), test.mean[ok], True,
                            np.array([rows[i].distribution for i in ok]), test.distribution[ok], n_boot=1000, seed=0)
        row = json_safe({"mode": label, "train_seconds": round(secs, 1),
                         **{k: m.get(k) for k in ("n", "srcc", "plcc", "accuracy", "emd_r2", "ci95")},
                         "best_epoch": (res.metrics.get("history") or {}).get("best_epoch"),
                         "val": {k: res.metrics["final_val"].get(k) for k in ("srcc", "emd")},
                         "train_images": {k: v for k, v in res.metrics["train_images"].items()
                                          if k in ("used", "with_comments", "retrieved", "own_comments_unread")},
                         "test_retrieved": getattr(rows, "report", {}).get("retrieved")})
        seed_srcc = [compute_metrics(x[~np.isnan(x)], test.mean[~np.isnan(x)], True, n_boot=0)["srcc"]
                     for x in seed_preds[-1]]
        row["seeds"] = json_safe({"seeds": [args.seed + k for k in range(args.train_seeds)], "srcc": seed_srcc,
                                  "mean_srcc": float(np.mean(seed_srcc)),
                                  "best_epochs": [(r[0].metrics.get("history") or {}).get("best_epoch")
                                                  for r in runs_of_row]})
        results.append(row)
        print(f"{label:<36} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} acc {m['accuracy']:.3f} "
              f"EMD {m['emd_r2']:.4f}  ({secs:.0f} s); over seeds {np.round(seed_srcc, 3)}")
    for r, p, sp in zip(results[1:], preds[1:], seed_preds[1:]):  # paired against image-only, same resamples
        r["srcc_minus_image"] = srcc_gain(p, preds[0], test.mean)
        r["seed_mean_srcc_minus_image"] = seed_mean_gain(sp, seed_preds[0], test.mean)
        print(f"{r['mode']:<36} SRCC minus image's: {r['srcc_minus_image']}; "
              f"seed means: {r['seed_mean_srcc_minus_image']}")
    modes = [r["mode"] for r in results]
    if "image+comments" in modes and "comments" in modes:  # the check's other half, with its CI
        both, alone = (seed_preds[modes.index(m)] for m in ("image+comments", "comments"))
        gain = seed_mean_gain(both, alone, test.mean)
        results[modes.index("image+comments")]["seed_mean_srcc_minus_comments"] = gain
        print(f"{'image+comments':<36} seed means minus comments': {gain}")
    siblings = sibling_retrieval(results, preds, models, test, comments_all, store)
    srcc = {r["mode"]: r["srcc"] for r in results}
    mean = {r["mode"]: r["seeds"]["mean_srcc"] for r in results}
    both = "image+comments" in srcc and "comments" in srcc
    checks = {**({"image+comments beats image": srcc["image+comments"] > srcc["image"],
                  f"image+comments beats image (mean of {args.train_seeds} seeds)":
                      mean["image+comments"] > mean["image"],
                  f"image+comments beats comments (mean of {args.train_seeds} seeds)":
                      mean["image+comments"] > mean["comments"],
                  "image+comments beats comments": srcc["image+comments"] > srcc["comments"]} if both else {}),
              **{f"{r['mode'].replace('comments (', 'comments beats image (')} (mean of {args.train_seeds} seeds)":
                 r["seeds"]["mean_srcc"] > mean["image"] for r in results if "retrieved" in r["mode"]},
              **{f"{r['mode'].replace('comments (', 'comments beats image (')}": r["srcc"] > srcc["image"]
                 for r in results if "retrieved" in r["mode"]},
              **{f"{mode.replace('comments (', 'comments beats image (')}, bank with the commented test "
                 f"images": v["srcc_minus_image"]["value"] > 0 for mode, v in siblings["results"].items()}}
    print(checks)
    from photocritic.device import cpu_info

    save_entry(args.results, args.key, {
        "cpu": cpu_info()["cpu_model"], "date": time.strftime("%Y-%m-%d"), "seed": args.seed,
        "train_seeds": args.train_seeds, "params": params, "world": world_summary(world),
        "test_images": len(test), "text_encoder": "minilm", "backbone": "efficientnet-lite0", "results": results,
        "retrieval_with_commented_test_images": siblings, "checks": checks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
