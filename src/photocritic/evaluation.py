"""``photocritic eval``: score a labelled split through the normal pipeline
and write metrics.json, predictions.csv, report.md and plots."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from . import metrics as M
from .data.datasets import LabelledSet


def compute_metrics(pred: np.ndarray, true: np.ndarray, on_1_to_10: bool,
                    pred_dist: np.ndarray | None = None, true_dist: np.ndarray | None = None,
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """Every score metric that applies to these predictions."""
    out = {"n": int(len(pred)), "srcc": M.srcc(pred, true), "plcc": M.plcc(pred, true),
           "plcc_logistic": M.plcc_logistic(pred, true), "krcc": M.krcc(pred, true)}
    if on_1_to_10:
        out.update(accuracy=M.accuracy(pred, true), mse=M.mse(pred, true), mae=M.mae(pred, true))
    if pred_dist is not None and true_dist is not None:
        out.update(emd=M.emd(pred_dist, true_dist, r=1), emd_r2=M.emd(pred_dist, true_dist, r=2))
    if n_boot and len(pred) >= 3:
        out["ci95"] = {name: list(M.bootstrap_ci(fn, pred, true, n_boot=n_boot, seed=seed))
                       for name, fn in (("srcc", M.srcc), ("plcc", M.plcc))}
    return out


def _plots(pred: np.ndarray, true: np.ndarray, out: Path, label: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    lo = float(min(pred.min(), true.min()))
    hi = float(max(pred.max(), true.max()))
    pad = 0.05 * (hi - lo or 1.0)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(true, pred, s=12, alpha=0.6, edgecolors="none")
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="identity (y = x)")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel("predicted score")
    ax.set_title(f"Predicted vs. true (SRCC {M.srcc(pred, true):.3f}, PLCC {M.plcc(pred, true):.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=110)
    plt.close(fig)
    files.append("scatter.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(lo - pad, hi + pad, 31)
    ax.hist(true, bins=bins, alpha=0.55, label=f"true {label}")
    ax.hist(pred, bins=bins, alpha=0.55, label="predicted")
    ax.set_xlabel("score")
    ax.set_ylabel("images")
    ax.set_title("Distribution of predicted and true scores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "histograms.png", dpi=110)
    plt.close(fig)
    files.append("histograms.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    k = int(min(10, max(2, len(pred) // 5)))
    edges = np.quantile(pred, np.linspace(0, 1, k + 1))
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, k - 1)
    xs = [float(pred[which == b].mean()) for b in range(k) if (which == b).any()]
    ys = [float(true[which == b].mean()) for b in range(k) if (which == b).any()]
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="perfect calibration")
    ax.plot(xs, ys, "o-", label=f"{k} equal-count bins of the prediction")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("mean predicted score in bin")
    ax.set_ylabel(f"mean true {label} in bin")
    ax.set_title("Calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)
    files.append("calibration.png")
    return files


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def evaluate(critic, ds: LabelledSet, output: str | Path, split_info: dict | None = None,
             cache=None, batch_size: int = 32, progress: bool = False, n_boot: int = 1000,
             decode: str = "auto") -> dict:
    """Score ``ds`` with ``critic`` and write the evaluation to ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if ds.root is None:
        raise ValueError(f"dataset {ds.name} has no image folder: pass --images DIR")
    paths = ds.image_paths()
    exists = [os.path.exists(p) for p in paths]
    present = [i for i, e in enumerate(exists) if e]
    missing = [p for p, e in zip(paths, exists) if not e]
    t0 = time.perf_counter()
    rows = critic.score([paths[i] for i in present], batch_size=batch_size, cache=cache,
                        progress=progress, decode=decode)
    seconds = time.perf_counter() - t0
    ok = [(i, r) for i, r in zip(present, rows) if r.status == "ok"]
    failed = [r for r in rows if r.status != "ok"]
    if len(ok) < 2:
        raise ValueError(f"only {len(ok)} images of {ds.name} could be scored; need at least 2")
    idx = np.array([i for i, _ in ok])
    pred = np.array([r.score for _, r in ok])
    true = ds.mean[idx]
    pred_dist = None  # the scalar models predict no distribution
    res = compute_metrics(pred, true, ds.on_1_to_10, pred_dist,
                          None if ds.distribution is None else ds.distribution[idx], n_boot=n_boot)
    stats = critic.last_stats
    res.update(model=critic.name, dataset=ds.name, label_kind=ds.kind, split=split_info,
               images_listed=len(ds), images_missing=len(missing), images_failed=len(failed),
               images_from_cache=stats.cached, seconds=round(seconds, 2),
               missing_examples=missing[:10], failed_examples=[r.error for r in failed[:10]])
    (out / "metrics.json").write_text(json.dumps(res, indent=2) + "\n")
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "true", "predicted"])
        for (i, r), p in zip(ok, pred):
            w.writerow([ds.ids[i], r.path, f"{ds.mean[i]:.6f}", f"{p:.6f}"])
    label = "mean score" if ds.on_1_to_10 else "MOS"
    plots = _plots(pred, true, out, label)
    lines = [f"# Evaluation of `{critic.name}` on `{ds.name}`", ""]
    if split_info:
        lines += [f"Split: **{split_info['split']}** ({split_info['how']}; {split_info['listed']} "
                  f"listed, {split_info['with_labels']} with labels).", ""]
    lines += [f"{len(ok)} images scored in {seconds:.1f} s ({stats.cached} embeddings from the cache); "
              f"{len(missing)} missing on disk, {len(failed)} failed to load (both excluded).", "",
              "| metric | value | 95% CI (bootstrap) |", "|---|---|---|"]
    for key in ("n", "srcc", "plcc", "plcc_logistic", "krcc", "accuracy", "mse", "mae", "emd", "emd_r2"):
        if key in res:
            ci = res.get("ci95", {}).get(key)
            lines.append(f"| {key} | {_fmt(res[key])} | {'' if ci is None else f'{ci[0]:.4f} – {ci[1]:.4f}'} |")
    lines += ["", "Accuracy is binary at 5 (prediction > 5 vs. label > 5); PLCC (logistic) is after "
              "the 4-parameter logistic fit.", ""]
    captions = {"scatter.png": "Predicted score against the true label, with the identity line.",
                "histograms.png": "Histograms of predicted and true scores.",
                "calibration.png": "Calibration: mean true label in equal-count bins of the prediction."}
    for f in plots:
        lines += [f"![{captions[f]}]({f})", "", captions[f], ""]
    if missing or failed:
        lines += ["## Images not evaluated", ""]
        for p in missing[:50]:
            lines.append(f"- missing: `{p}`")
        for r in failed[:50]:
            lines.append(f"- {r.status}: {r.error}")
        more = len(missing) + len(failed) - min(len(missing), 50) - min(len(failed), 50)
        if more > 0:
            lines.append(f"- … and {more} more")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return res
