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


def safe_metric(fn, *args, **kw) -> float:
    """``fn(...)``, or NaN where it is undefined (a ValueError: too few images, constant labels)."""
    try:
        return float(fn(*args, **kw))
    except ValueError:
        return float("nan")


def compute_metrics(pred: np.ndarray, true: np.ndarray, on_1_to_10: bool,
                    pred_dist: np.ndarray | None = None, true_dist: np.ndarray | None = None,
                    n_boot: int = 1000, seed: int = 0, pred_binary: np.ndarray | None = None) -> dict:
    """Every score metric that applies to these predictions.

    What cannot be computed (too few images, constant labels, a logistic
    fit that fails) is NaN, with the reason under ``notes``; :func:`json_safe`
    turns NaN into ``null``. ``pred_binary`` holds the method's own binary
    predictions (1 = good); without it accuracy uses predicted score > 5.
    """
    n = int(len(pred))
    notes = []
    out = {"n": n, "srcc": safe_metric(M.srcc, pred, true), "plcc": safe_metric(M.plcc, pred, true),
           "krcc": safe_metric(M.krcc, pred, true)}
    if n >= 2:
        out["plcc_logistic"], why = M.plcc_logistic_fit(pred, true)
    else:
        out["plcc_logistic"], why = float("nan"), "fewer than 2 images"
    if why:
        out["plcc_logistic_failed"] = why
        notes.append(f"plcc_logistic: {why}")
    if n and np.ptp(np.asarray(true)) == 0:
        notes.append("all labels are equal: correlations are undefined")
    if on_1_to_10 and n:
        out["accuracy"] = (M.binary_accuracy(pred_binary, true) if pred_binary is not None
                           else M.accuracy(pred, true))
        out.update(mse=M.mse(pred, true), mae=M.mae(pred, true))
    if pred_dist is not None and true_dist is not None:
        out.update(emd=M.emd(pred_dist, true_dist, r=1), emd_r2=M.emd(pred_dist, true_dist, r=2))
    if n_boot:
        if n >= 3:
            out["ci95"] = {name: list(M.bootstrap_ci(fn, pred, true, n_boot=n_boot, seed=seed))
                           for name, fn in (("srcc", M.srcc), ("plcc", M.plcc))}
            out["bootstrap"] = {"resamples": n_boot, "seed": seed}
        else:
            notes.append("bootstrap: fewer than 3 images")
    if notes:
        out["notes"] = notes
    return out


def json_safe(x):
    """``x`` with every NaN or infinity replaced by None (valid JSON)."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


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
    ax.set_title(f"Predicted vs. true (SRCC {safe_metric(M.srcc, pred, true):.3f}, "
                 f"PLCC {safe_metric(M.plcc, pred, true):.3f})")
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
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def attribute_metrics(pred: np.ndarray, truth: np.ndarray, names, n_boot: int = 0, seed: int = 0) -> dict:
    """SRCC and PLCC of each attribute's predicted score (``pred`` (N, A))
    against its label (``truth`` (N, A), NaN where an image has none), over
    the images with that label; with ``n_boot``, a bootstrap CI of the SRCC."""
    out = {}
    for a, name in enumerate(names):
        have = np.isfinite(truth[:, a])
        p, t = np.asarray(pred[have, a], np.float64), np.asarray(truth[have, a], np.float64)
        m = {"srcc": safe_metric(M.srcc, p, t), "plcc": safe_metric(M.plcc, p, t), "n": int(have.sum())}
        if len(p) >= 3 and n_boot:
            m["srcc_ci95"] = list(M.bootstrap_ci(M.srcc, p, t, n_boot=n_boot, seed=seed))
        out[name] = m
    return out


def evaluate(critic, ds: LabelledSet, output: str | Path, split_info: dict | None = None,
             cache=None, batch_size: int = 32, progress: bool = False, n_boot: int = 1000,
             decode: str = "auto", seed: int = 0, workers: int | None = None, comments=None,
             attribute_labels: str | Path | None = None) -> dict:
    """Score ``ds`` with ``critic`` and write the evaluation to ``output``.

    Accuracy uses the method's own binary rule (:attr:`Critic.binary_rule`),
    named in the report. Metrics that cannot be computed are ``null`` in
    metrics.json, with the reason under ``notes``. ``comments``: for models
    that read comments (MMLQ), ``{id: [text, ...]}`` or a comments file; a
    comments-only model opens no image (the dataset needs none).
    ``attribute_labels`` (a model with attribute scores): per-image attribute
    scores (:func:`~photocritic.data.attributes.read_attribute_scores`);
    SRCC and PLCC per attribute go under ``attributes``."""
    out = Path(output)
    attr_names = list(getattr(critic.head, "attributes", []) or []) if attribute_labels else []
    if attribute_labels and not getattr(critic.head, "has_attributes", False):
        raise ValueError(f"--attribute-labels: model {critic.name} has no attribute scores")
    if attribute_labels:
        from .data.attributes import read_attribute_scores

        _, attr_truth = read_attribute_scores(attribute_labels, attr_names)
    out.mkdir(parents=True, exist_ok=True)
    tokens = getattr(critic, "reads_tokens", False)
    no_images = tokens and critic.encoder_spec is None
    if ds.root is None and not no_images:
        raise ValueError(f"dataset {ds.name} has no image folder: pass --images DIR")
    paths = list(ds.ids) if no_images else ds.image_paths()
    exists = [True] * len(paths) if no_images else [os.path.exists(p) for p in paths]
    present = [i for i, e in enumerate(exists) if e]
    missing = [p for p, e in zip(paths, exists) if not e]
    t0 = time.perf_counter()
    ids = {"ids": [ds.ids[i] for i in present]} if tokens else {}  # a file's id is not always its stem
    rows = critic.score([paths[i] for i in present], batch_size=batch_size, cache=cache,
                        progress=progress, decode=decode, workers=workers, comments=comments, **ids)
    seconds = time.perf_counter() - t0
    ok = [(i, r) for i, r in zip(present, rows) if r.status == "ok"]
    without_comments = [r for r in rows if r.status == "no_comments"]
    failed = [r for r in rows if r.status not in ("ok", "no_comments")]
    if not ok:
        raise ValueError(f"none of the {len(ds)} images of {ds.name} could be scored "
                         f"({len(missing)} missing on disk, {len(failed)} failed to load, "
                         f"{len(without_comments)} without comments)")
    idx = np.array([i for i, _ in ok])
    pred = np.array([r.score for _, r in ok])
    true = ds.mean[idx]
    binary = np.array([r.binary for _, r in ok]) if all(r.binary is not None for _, r in ok) else None
    pred_dist = (np.array([r.distribution for _, r in ok])
                 if all(r.distribution is not None for _, r in ok) else None)
    res = compute_metrics(pred, true, ds.on_1_to_10, pred_dist,
                          None if ds.distribution is None else ds.distribution[idx], n_boot=n_boot,
                          seed=seed, pred_binary=binary)
    rule = critic.binary_rule
    if "accuracy" in res:
        res["accuracy_rule"] = rule
    stats = rows.stats
    res.update(model=critic.name, dataset=ds.name, label_kind=ds.kind, label_scale=ds.scale,
               split=split_info, images_listed=len(ds), images_missing=len(missing),
               images_failed=len(failed), images_from_cache=stats.cached, seconds=round(seconds, 2),
               missing_examples=missing[:10], failed_examples=[r.error for r in failed[:10]])
    if tokens and critic.reads_comments:
        res["images_without_comments"] = len(without_comments)
        report = getattr(rows, "report", {})
        for key in ("retrieved", "comment_sets"):
            if key in report:
                res[key] = report[key]
    if ds.dropped:
        res["labels_dropped"] = ds.dropped
    if attribute_labels:
        ids = [ds.ids[i] for i, _ in ok]
        res["attributes"] = attribute_metrics(
            np.array([[r.attributes[a] for a in attr_names] for _, r in ok], np.float64),
            np.array([[attr_truth.get(i, {}).get(a, np.nan) for a in attr_names] for i in ids], np.float64),
            attr_names, n_boot, seed)
    res = json_safe(res)
    (out / "metrics.json").write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    extra = ["context_class"] if any(r.context_class for _, r in ok) else []
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "true", "predicted", "predicted_good", *extra])
        for (i, r), p in zip(ok, pred):
            w.writerow([ds.ids[i], r.path, f"{ds.mean[i]:.6f}", f"{p:.6f}",
                        "" if r.binary is None else int(r.binary), *(r.context_class for _ in extra)])
    label = "mean score" if ds.on_1_to_10 else "MOS"
    plots = _plots(pred, true, out, label)
    lines = [f"# Evaluation of `{critic.name}` on `{ds.name}`", ""]
    if split_info:
        lines += [f"Split: **{split_info['split']}** ({split_info['how']}; {split_info['listed']} "
                  f"listed, {split_info['with_labels']} with labels).", ""]
    lines += [f"{len(ok)} images scored in {seconds:.1f} s ({stats.cached} embeddings from the cache); "
              f"{len(missing)} missing on disk, {len(failed)} failed to load"
              + (f", {len(without_comments)} without comments" if without_comments else "")
              + " (all excluded).", "",
              "| metric | value | 95% CI (bootstrap) |", "|---|---|---|"]
    for key in ("n", "srcc", "plcc", "plcc_logistic", "krcc", "accuracy", "mse", "mae", "emd", "emd_r2"):
        if key in res:
            ci = (res.get("ci95") or {}).get(key)
            ci_text = "" if ci is None or None in ci else f"{ci[0]:.4f} – {ci[1]:.4f}"
            lines.append(f"| {key} | {_fmt(res[key])} | {ci_text} |")
    lines += [""]
    if "accuracy" in res:
        lines += [f"Binary rule for accuracy: **{rule}**, against label > 5.", ""]
    lines += ["PLCC (logistic) is after a monotone increasing 4-parameter logistic fit; "
              "n/a means it could not be computed (see notes).", ""]
    if ds.scale:
        lines += [f"Labels were on the {ds.scale} scale and mapped linearly to 1–10.", ""]
    if res.get("attributes"):
        lines += ["Per attribute (images with that attribute's score):", "",
                  "| attribute | n | SRCC | 95% CI | PLCC |", "|---|---|---|---|---|"]
        for name, m in res["attributes"].items():
            ci = m.get("srcc_ci95") or [None, None]
            ci_text = "" if None in ci else f"{ci[0]:.4f} – {ci[1]:.4f}"
            lines.append(f"| {name} | {m['n']} | {_fmt(m['srcc'])} | {ci_text} | {_fmt(m['plcc'])} |")
        lines.append("")
    for note in res.get("notes", []):
        lines.append(f"- note: {note}")
    if res.get("notes"):
        lines.append("")
    captions = {"scatter.png": "Predicted score against the true label, with the identity line.",
                "histograms.png": "Histograms of predicted and true scores.",
                "calibration.png": "Calibration: mean true label in equal-count bins of the prediction."}
    for f in plots:
        lines += [f"![{captions[f]}]({f})", "", captions[f], ""]
    if missing or failed or without_comments:
        failed = failed + without_comments
        lines += ["## Images not evaluated", ""]
        for p in missing[:50]:
            lines.append(f"- missing: `{p}`")
        for r in (failed + without_comments)[:50]:
            lines.append(f"- {r.status}: {r.error}")
        more = len(missing) + len(failed) - min(len(missing), 50) - min(len(failed), 50)
        if more > 0:
            lines.append(f"- … and {more} more")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return res
