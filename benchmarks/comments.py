"""Real comments -> AVA scores: DPChallenge critiques of the 2,038 images
that also have real AVA vote histograms (../shared/data).

Rows (5-fold cross-validation by image id, one fixed seeded fold
assignment shared by every row):

* ``tfidf-ridge``: TF-IDF (word 1-2 grams) + ridge regression;
* ``ridge-minilm`` / ``ridge-mpnet``: ridge on the mean-pooled, normalised
  token states of an image's comments (MiniLM-L6 384-d / all-mpnet-base-v2
  768-d; the same token view MMLQ reads);
* ``mmlq-minilm`` / ``mmlq-mpnet``: ``mmlq --inputs comments`` on those
  tokens, early-stopped on a seeded 10% of each training fold.

Ridge's alpha is chosen by leave-one-out inside each training fold
(RidgeCV). Per row: mean and s.d. of each fold's SRCC/PLCC/accuracy/EMD,
and the pooled out-of-fold predictions' SRCC/PLCC with bootstrap 95% CIs.

    python benchmarks/comments.py [--rows ...] [--folds 5] [--seed 0]

Writes benchmarks/results/comments.json. Token states are kept in
build/comments-bench/ (a second run encodes nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "comments.json"
LABEL_FILES = ["ava/labels/tanet_test.csv", "ava/labels/tanet_val.csv", "ava/labels/idealo_ava_labels_test.json",
               "ava/AVA_head.txt"]
ROWS = ["tfidf-ridge", "ridge-minilm", "ridge-mpnet", "mmlq-minilm", "mmlq-mpnet"]


def load_data():
    """ids, comments (list per id), votes (N, 10) of the images with both."""
    from photocritic.data.comments import read_comments
    from photocritic.data.datasets import load_dataset

    comments = read_comments(SHARED / "comments" / "dpc_impression_and_subject.json")
    votes: dict[str, np.ndarray] = {}
    for f in LABEL_FILES:
        ds = load_dataset(str(SHARED / f))
        for i, d in zip(ds.ids, ds.distribution):
            if i in comments and any(c.strip() for c in comments[i]):
                votes.setdefault(i, np.asarray(d, dtype=np.float64))
    ids = sorted(votes)
    return ids, {i: comments[i] for i in ids}, np.stack([votes[i] for i in ids])


def folds_of(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[f::k]) for f in range(k)]


def fold_metrics(pred, true_mean, pred_dist=None, true_dist=None) -> dict:
    from photocritic.evaluation import compute_metrics

    m = compute_metrics(np.asarray(pred), true_mean, True, pred_dist, true_dist, n_boot=0)
    out = {k: m[k] for k in ("srcc", "plcc", "accuracy")}
    out["emd"] = m.get("emd_r2")  # EMD r = 2, as NIMA and MMLQ report it
    return out


def ridge_predict(x_train, y_train, x_test, standardize: bool = True):
    """RidgeCV (alpha by leave-one-out on the training fold); dense
    embeddings are standardised, TF-IDF's sparse weights are not."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()] if standardize else []
    model = make_pipeline(*steps, RidgeCV(alphas=np.logspace(-2, 5, 29)))
    model.fit(x_train, y_train)
    return model.predict(x_test), float(model[-1].alpha_)


def tokens_for(encoder_name: str, ids, comments, limit: int = 512):
    from photocritic.encoders.text import text_encoder
    from photocritic.features import TokenStore
    from photocritic.textviews import comment_tokens

    store = TokenStore(REPO / "build" / "comments-bench" / "tokens")
    enc = text_encoder(encoder_name)
    t0 = time.perf_counter()
    tokens, report = comment_tokens(enc, comments, ids, store, limit)
    print(f"  {encoder_name}: {report.to_dict()} in {time.perf_counter() - t0:.1f} s", flush=True)
    return [tokens[i] for i in ids], report.to_dict(), store


def pooled(tokens) -> np.ndarray:
    out = np.stack([np.asarray(t, dtype=np.float32).mean(0) for t in tokens])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def mmlq_fold(tokens, votes, mean, train, test, params: dict, seed: int):
    from photocritic.losses import emd
    from photocritic.methods.base import Targets
    from photocritic.methods.mmlq import MMLQ

    import torch

    rng = np.random.default_rng(seed)
    val = np.sort(rng.choice(train, size=max(2, len(train) // 10), replace=False))
    fit = np.setdiff1d(train, val)
    m = MMLQ(inputs="comments", seed=seed, **params)
    q_val = torch.as_tensor(votes[val] / votes[val].sum(1, keepdims=True), dtype=torch.float32)

    def on_epoch(epoch, loss):
        p = m.predict({"text.tokens": [tokens[i] for i in val]})
        return {"emd": float(emd(torch.as_tensor(p.distribution), q_val))}

    m.fit({"text.tokens": [tokens[i] for i in fit]}, Targets(mean[fit], votes[fit]),
          val=({"text.tokens": [tokens[i] for i in val]}, Targets(mean[val], votes[val])), on_epoch=on_epoch)
    p = m.predict({"text.tokens": [tokens[i] for i in test]})
    return p.score, p.distribution, m.history_


def summarise(name, per_fold, oof, oof_dist, mean, votes, extra=None) -> dict:
    from photocritic import metrics as M

    out = {"row": name, "folds": per_fold}
    for key in ("srcc", "plcc", "accuracy", "emd"):
        vals = [f[key] for f in per_fold if f.get(key) is not None]
        if vals:
            out[f"{key}_mean"], out[f"{key}_sd"] = float(np.mean(vals)), float(np.std(vals, ddof=1))
    out["pooled"] = {"srcc": float(M.srcc(oof, mean)), "plcc": float(M.plcc(oof, mean)),
                     "ci95": {"srcc": list(M.bootstrap_ci(M.srcc, oof, mean, n_boot=1000, seed=0)),
                              "plcc": list(M.bootstrap_ci(M.plcc, oof, mean, n_boot=1000, seed=0))}}
    if oof_dist is not None:
        out["pooled"]["emd"] = float(M.emd(oof_dist, votes, r=2))
    if extra:
        out.update(extra)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--param", action="append", default=[], help="MMLQ NAME=VALUE (all mmlq rows)")
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the real comments and AVA labels")
    import torch

    torch.manual_seed(0)
    print(machine_line(), flush=True)
    ids, comments, votes = load_data()
    mean = (votes / votes.sum(1, keepdims=True)) @ np.arange(1, 11)
    folds = folds_of(len(ids), args.folds, args.seed)
    print(f"{len(ids)} images with comments and AVA votes; {args.folds} folds of ~{len(folds[0])}", flush=True)
    params = {}
    for item in args.param:
        k, _, v = item.partition("=")
        params[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
    rows, token_info = [], {}
    cached_tokens = {}
    for name in args.rows.split(","):
        t0 = time.perf_counter()
        per_fold, oof, oof_dist, extra = [], np.zeros(len(ids)), None, {}
        enc = name.split("-")[-1]
        if name != "tfidf-ridge" and enc not in cached_tokens:
            tokens, info, store = tokens_for(enc, ids, comments)
            cached_tokens[enc] = tokens
            token_info[enc] = {"mean_tokens": float(np.mean([len(t) for t in tokens])), **info}
        alphas = []
        for f, test in enumerate(folds):
            train = np.setdiff1d(np.arange(len(ids)), test)
            if name == "tfidf-ridge":
                from sklearn.feature_extraction.text import TfidfVectorizer

                texts = [" ".join(comments[i]) for i in ids]
                vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
                xt = vec.fit_transform([texts[i] for i in train])
                xs = vec.transform([texts[i] for i in test])
                pred, alpha = ridge_predict(xt, mean[train], xs, standardize=False)
                alphas.append(alpha)
                per_fold.append(fold_metrics(pred, mean[test]))
            elif name.startswith("ridge-"):
                x = pooled(cached_tokens[enc])
                pred, alpha = ridge_predict(x[train], mean[train], x[test])
                alphas.append(alpha)
                per_fold.append(fold_metrics(pred, mean[test]))
            else:
                pred, dist, hist = mmlq_fold(cached_tokens[enc], votes, mean, train, test, params, args.seed + f)
                oof_dist = np.zeros((len(ids), 10)) if oof_dist is None else oof_dist
                oof_dist[test] = dist
                per_fold.append({**fold_metrics(pred, mean[test], dist, votes[test]), **hist})
            oof[test] = pred
            print(f"  {name} fold {f}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_fold[-1].items()
                                                      if isinstance(v, float)), flush=True)
        if alphas:
            extra["ridge_alpha"] = alphas
        if name.startswith("mmlq"):
            from photocritic.methods.mmlq import MMLQ

            extra["params"] = {**MMLQ(inputs="comments", **params).get_params()}
        extra["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(summarise(name, per_fold, oof, oof_dist, mean, votes, extra))
        r = rows[-1]
        print(f"{name}: SRCC {r['srcc_mean']:.3f} ± {r['srcc_sd']:.3f}, PLCC {r['plcc_mean']:.3f}, "
              f"acc {r['accuracy_mean']:.3f}" + (f", EMD {r['emd_mean']:.4f}" if "emd_mean" in r else "")
              + f" ({r['seconds']} s)", flush=True)
    old = {}
    if Path(args.output).exists():  # rows not re-run this time are kept
        old = {r["row"]: r for r in json.loads(Path(args.output).read_text()).get("rows", [])}
    merged = {**old, **{r["row"]: r for r in rows}}
    write_results(args.output, images=len(ids), folds=args.folds, seed=args.seed,
                  data="../shared/data: comments/dpc_impression_and_subject.json x AVA votes (ava/)",
                  tokens=token_info, rows=[merged[k] for k in ROWS if k in merged]
                  + [v for k, v in merged.items() if k not in ROWS])


if __name__ == "__main__":
    main()
