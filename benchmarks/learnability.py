"""Learnability on the synthetic aesthetic world: held-out SRCC / PLCC /
accuracy / EMD (with bootstrap CIs) of every trainable method, the shipped
``lite`` (trained on a world of this generator, so not held out) and
zero-shot on a tiny random CLIP; ``linear`` on
each available backbone side by side (the shape of Hentschel et al.'s
Table 2).

    python benchmarks/learnability.py [--n 2000] [--finetune-epochs 6]
    python benchmarks/learnability.py --part mmlq [--n 2000]

``--part mmlq``: MMLQ's modes on the same kind of world (image tokens of
EfficientNet-Lite0, comment tokens of MiniLM): ``image``, ``comments``,
``image+comments``, and ``image`` + retrieved comments (trained with the
comments of half the training images, the rest retrieved; every test image
gets retrieved comments only). Written under ``mmlq`` in the same file.

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
from _common import machine_line, write_results  # noqa: E402

import photocritic  # noqa: E402
from photocritic.data.datasets import load_dataset  # noqa: E402
from photocritic.data.synthetic import find_sources, synthesize  # noqa: E402
from photocritic.evaluation import compute_metrics, json_safe  # noqa: E402
from photocritic.training.run import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "learnability.json"


def evaluate(model, test, store) -> dict:
    rows = model.score(test.image_paths(), cache=store)
    ok = [i for i, r in enumerate(rows) if r.status == "ok"]
    pred = np.array([rows[i].score for i in ok])
    dist = (np.array([rows[i].distribution for i in ok]) if rows[0].distribution is not None else None)
    m = compute_metrics(pred, test.mean[ok], True, dist, test.distribution[ok], n_boot=1000, seed=0)
    keep = {k: m.get(k) for k in ("n", "srcc", "plcc", "accuracy", "emd_r2")}
    keep["ci95"] = m.get("ci95")
    return json_safe(keep)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-epochs", type=int, default=6,
                    help="a cap for the CPU budget (the method itself has none)")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--part", choices=["heads", "mmlq"], default="heads")
    ap.add_argument("--retrieve", type=int, default=3, help="--part mmlq: comments of K nearest images")
    ap.add_argument("--param", action="append", default=[], help="--part mmlq: MMLQ NAME=VALUE")
    ap.add_argument("--key", default="mmlq", help="--part mmlq: where in the results file")
    ap.add_argument("--results", default=str(RESULTS), help="the results file (default: %(default)s)")
    args = ap.parse_args()
    print(machine_line())
    if args.part == "mmlq":
        return mmlq_part(args)
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
    results = []
    for label, backbone, params in runs:
        method = label.split(" ")[0]
        out = tmp / f"m{len(results)}"
        t1 = time.perf_counter()
        res = train({**common, "method": method, "backbone": backbone, "output": str(out), "params": params},
                    log=lambda m: None)
        secs = time.perf_counter() - t1
        model = photocritic.load(str(out))
        m = evaluate(model, test, store)
        name = {str(tiny_clip): "tiny random CLIP", str(tiny_siglip): "tiny random SigLIP"}.get(backbone, backbone)
        row = {"method": label, "backbone": name, "train_seconds": round(secs, 1), **m,
               "notes": res.notes, "best_epoch": res.metrics.get("best_epoch") or
               (res.metrics.get("history") or {}).get("best_epoch")}
        results.append(row)
        print(f"{label:<40} {name:<20} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} acc {m['accuracy']:.3f}"
              + (f" EMD {m['emd_r2']:.4f}" if m.get("emd_r2") is not None else "") + f"  ({secs:.0f} s)")
    # the shipped lite was trained (configs/lite.yaml) on a world of this generator, on the same
    # source photos: its row is not held out, unlike every trained row here
    for label, model in (("lite (shipped; trained on these source photos)", photocritic.load("lite")),
                         ("zero-shot (vila prompts)", photocritic.zoo.zero_shot(tiny_clip))):
        m = evaluate(model, test, store)
        results.append({"method": label, "backbone": "efficientnet-lite0" if "lite" in label else
                        "tiny random CLIP", **m})
        print(f"{label:<40} {results[-1]['backbone']:<20} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} "
              f"acc {m['accuracy']:.3f}")
    lite = next(r for r in results if r["method"].startswith("lite"))
    trained = [r for r in results if r["backbone"] == "efficientnet-lite0" and not r["method"].startswith("lite")]
    checks = {"every trained method beats lite": {r["method"]: r["srcc"] > lite["srcc"] for r in trained}}
    ft = next((r for r in results if r["method"] == "finetune"), None)
    lin = next(r for r in results if r["method"] == "linear" and r["backbone"] == "efficientnet-lite0")
    if ft:
        checks["finetune beats linear"] = ft["srcc"] > lin["srcc"]
    print(checks)
    import json

    kept = {}  # the mmlq part, written by --part mmlq, stays
    if RESULTS.exists():
        kept = {k: v for k, v in json.loads(RESULTS.read_text()).items() if k.startswith("mmlq")}
    write_results(RESULTS, world={k: world[k] for k in ("images", "sources", "splits")}, seed=args.seed,
                  test_images=len(test), results=results, checks=checks,
                  finetune_epoch_cap=None if args.skip_finetune else args.finetune_epochs, **kept)
    print(f"wrote {RESULTS}")
    return 0


def mmlq_part(args) -> int:
    import json

    tmp = Path(tempfile.mkdtemp(prefix="pc-learn-mmlq-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    t0 = time.perf_counter()
    world = synthesize(tmp / "world", args.n, seed=args.seed, sources=find_sources(), min_sources=30)
    print(f"world: {world} in {time.perf_counter() - t0:.0f} s")
    store = tmp / "features.sqlite"
    ds = load_dataset(tmp / "world")
    train_set, test = ds.split("train")[0], ds.split("test")[0]
    comments_all = json.loads((tmp / "world" / "comments.json").read_text())
    half = {k: v for k, v in comments_all.items() if Path(k).stem in set(train_set.ids[::2])}
    (tmp / "half.json").write_text(json.dumps(half))
    common = {"dataset": str(tmp / "world"), "split": "train", "val_split": "val", "cache": str(store),
              "quiet": True, "seed": args.seed, "method": "mmlq", "backbone": "efficientnet-lite0"}
    params = {}
    for item in args.param:
        k, _, v = item.partition("=")
        params[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
    runs = [("image", {"inputs": "image"}, None),
            ("comments", {"inputs": "comments"}, "all"),
            ("image+comments", {"inputs": "image+comments"}, "all"),
            (f"image + retrieved comments (k={args.retrieve})",
             {"inputs": "image+comments", "retrieve_comments": args.retrieve}, "half")]
    files = {"all": str(tmp / "world" / "comments.json"), "half": str(tmp / "half.json")}
    results = []
    for label, opts, which in runs:
        out = tmp / f"q{len(results)}"
        t1 = time.perf_counter()
        res = train({**common, "params": {**params, **opts}, "comments": files.get(which), "output": str(out)},
                    log=lambda m: None)
        secs = time.perf_counter() - t1
        model = photocritic.load(str(out))
        # test images: their own comments, except in the retrieval row (every one retrieved)
        rows = model.score(test.image_paths(), cache=str(store), ids=list(test.ids),
                           comments=comments_all if which == "all" else ({} if which else None))
        ok = [i for i, r in enumerate(rows) if r.status == "ok"]
        m = compute_metrics(np.array([rows[i].score for i in ok]), test.mean[ok], True,
                            np.array([rows[i].distribution for i in ok]), test.distribution[ok], n_boot=1000, seed=0)
        row = json_safe({"mode": label, "train_seconds": round(secs, 1),
                         **{k: m.get(k) for k in ("n", "srcc", "plcc", "accuracy", "emd_r2", "ci95")},
                         "best_epoch": (res.metrics.get("history") or {}).get("best_epoch"),
                         "val": {k: res.metrics["final_val"].get(k) for k in ("srcc", "emd")},
                         "train_images": {k: v for k, v in res.metrics["train_images"].items()
                                          if k in ("used", "with_comments", "retrieved")},
                         "test_retrieved": getattr(rows, "report", {}).get("retrieved")})
        results.append(row)
        print(f"{label:<36} SRCC {m['srcc']:.3f} PLCC {m['plcc']:.3f} acc {m['accuracy']:.3f} "
              f"EMD {m['emd_r2']:.4f}  ({secs:.0f} s)")
    srcc = {r["mode"]: r["srcc"] for r in results}
    ret = results[-1]["mode"]
    checks = {"image+comments beats image": srcc["image+comments"] > srcc["image"],
              "image+comments beats comments": srcc["image+comments"] > srcc["comments"],
              "image + retrieved comments beats image": srcc[ret] > srcc["image"]}
    print(checks)
    from photocritic.device import cpu_info

    results_file = Path(args.results)
    data = json.loads(results_file.read_text()) if results_file.exists() else {}
    data[args.key] = {"cpu": cpu_info()["cpu_model"], "date": time.strftime("%Y-%m-%d"), "seed": args.seed,
                    "params": params,
                    "world": {k: world[k] for k in ("images", "sources", "splits")}, "test_images": len(test),
                    "text_encoder": "minilm", "backbone": "efficientnet-lite0", "results": results, "checks": checks}
    results_file.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {results_file} ({args.key})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
