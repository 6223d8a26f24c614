"""Prompt search (Hentschel et al., 2022): try every positive x negative
adjective pair in a template, on a labelled training split, and keep the best
by SRCC (continuous task: the weighted sum of Eq. 1-2) or by accuracy
(binary task: the label of the more similar prompt, against mean > 5).
Image and text embeddings are computed once; each pair is then two columns
of a similarity matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import metrics as M
from .zeroshot import PROMPT_DIR, PromptSet, _unit


def adjective_lists() -> tuple[list[str], list[str]]:
    """The 27 positive and 12 negative adjectives built from WordNet
    (scripts/build_prompt_words.py)."""
    d = json.loads((PROMPT_DIR / "adjectives.json").read_text())
    return d["positive"], d["negative"]


def search(image_emb, labels, text_embed, positive: list[str], negative: list[str],
           template: str = "a {label} picture", task: str = "continuous") -> list[dict]:
    """Every (positive, negative) pair with its score, best first.

    ``text_embed(list[str]) -> (K, D)``; ``labels`` are 1-10 mean scores.
    """
    if task not in ("continuous", "binary"):
        raise ValueError(f"task must be continuous or binary, not {task!r}")
    words = list(dict.fromkeys(positive + negative))
    sims = (_unit(image_emb) @ _unit(text_embed([template.replace("{label}", w) for w in words])).T).numpy()
    col = {w: k for k, w in enumerate(words)}
    y = np.asarray(labels, dtype=np.float64)
    out = []
    for p in positive:
        for n in negative:
            diff = sims[:, col[p]] - sims[:, col[n]]
            value = M.srcc(diff, y) if task == "continuous" else float(np.mean((diff > 0) == (y > 5)))
            out.append({"positive": p, "negative": n, "task": task,
                        "srcc" if task == "continuous" else "accuracy": float(value)})
    key = "srcc" if task == "continuous" else "accuracy"
    return sorted(out, key=lambda r: -np.nan_to_num(r[key], nan=-2.0))


def best_prompt_set(results: list[dict], template: str = "a {label} picture",
                    name: str | None = None) -> PromptSet:
    best = results[0]
    metric = "srcc" if "srcc" in best else "accuracy"
    return PromptSet(name=name or f"search-{best['positive']}-{best['negative']}", rule="weighted_sum",
                     template=template, positive=[best["positive"]], negative=[best["negative"]],
                     description=f"best of {len(results)} pairs by {metric} "
                                 f"({best[metric]:.4f}) in a prompt search")


def save_results(results: list[dict], path: str | Path) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
