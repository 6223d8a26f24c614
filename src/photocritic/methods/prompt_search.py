"""Prompt search (Hentschel et al., 2022): try every positive x negative
adjective pair in a template, on a labelled training split, and keep the best
by SRCC (continuous task: the weighted sum of Eq. 1-2) or by accuracy
(binary task: the label of the more similar prompt, against mean > 5).

With a context template (``{class}``, e.g. "a {label} picture, of a
#{class}") each adjective is filled into one prompt per class (the 1,000
ImageNet classes): the continuous score is the weighted sum over all
2 x 1,000 prompts of a pair, the binary prediction the label of the most
similar of them - the context-aware search the paper ran.

Image and text embeddings are computed once; per adjective only the sum and
the maximum of its prompts' similarities are kept, so each pair costs two
columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .. import metrics as M
from .zeroshot import PROMPT_DIR, PromptSet, _unit


def adjective_lists() -> tuple[list[str], list[str]]:
    """The 27 positive and 12 negative adjectives built from WordNet
    (scripts/build_prompt_words.py)."""
    d = json.loads((PROMPT_DIR / "adjectives.json").read_text())
    return d["positive"], d["negative"]


PLACEHOLDERS = {"label", "class"}


def check_template(template: str) -> None:
    """A search template needs ``{label}``; ``{class}`` is optional; nothing else."""
    names = set(re.findall(r"\{(\w*)\}", template))
    if "label" not in names:
        raise ValueError(f"--template {template!r} has no {{label}} for the adjectives, so every "
                         f"pair would get the same prompt; e.g. 'a {{label}} picture' or "
                         f"'a {{label}} picture, of a #{{class}}'")
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ValueError(f"--template {template!r}: unknown placeholder(s) "
                         f"{', '.join('{' + u + '}' for u in sorted(unknown))}; use {{label}} and {{class}}")


def _word_stats(image_emb, text_embed, words, template, classes):
    """Per adjective: (sum, max) over its prompts of the cosine to each image."""
    x = _unit(image_emb)
    total, best = {}, {}
    for w in words:
        filled = template.replace("{label}", w)
        prompts = [filled.replace("{class}", c) for c in classes] if classes else [filled]
        sims = (x @ _unit(text_embed(prompts)).T).numpy().astype(np.float64)
        total[w], best[w] = sims.sum(1), sims.max(1)
    return total, best


def search(image_emb, labels, text_embed, positive: list[str], negative: list[str],
           template: str = "a {label} picture", task: str = "continuous",
           classes: list[str] | None = None) -> list[dict]:
    """Every (positive, negative) pair with its score, best first (pairs
    whose score is NaN last).

    ``text_embed(list[str]) -> (K, D)``; ``labels`` are 1-10 mean scores;
    ``classes`` fill ``{class}`` in a context template.
    """
    if task not in ("continuous", "binary"):
        raise ValueError(f"task must be continuous or binary, not {task!r}")
    check_template(template)
    if ("{class}" in template) != bool(classes):
        raise ValueError("a template with {class} needs classes, and classes need {class} in the template")
    words = list(dict.fromkeys(positive + negative))
    total, best = _word_stats(image_emb, text_embed, words, template, classes)
    y = np.asarray(labels, dtype=np.float64)
    key = "srcc" if task == "continuous" else "accuracy"
    out = []
    for p in positive:
        for n in negative:
            if task == "continuous":
                value = M.srcc(total[p] - total[n], y)
            else:
                value = float(np.mean((best[p] > best[n]) == (y > 5)))
            out.append({"positive": p, "negative": n, "task": task, key: float(value)})
    return sorted(out, key=lambda r: -np.nan_to_num(r[key], nan=-2.0))


def best_prompt_set(results: list[dict], template: str = "a {label} picture",
                    name: str | None = None, classes: str | list[str] | None = None) -> PromptSet:
    """The winner as a prompt set: ``weighted_sum`` for a fixed template,
    ``context`` for a template with ``{class}``. Refuses a NaN winner."""
    best = results[0]
    metric = "srcc" if "srcc" in best else "accuracy"
    if not np.isfinite(best[metric]):
        raise ValueError(f"every pair's {metric} is NaN (constant labels or constant similarities), "
                         f"so there is no best pair; nothing was saved")
    context = "{class}" in template
    return PromptSet(name=name or f"search-{best['positive']}-{best['negative']}",
                     rule="context" if context else "weighted_sum",
                     template=template, positive=[best["positive"]], negative=[best["negative"]],
                     classes=classes if context else None,
                     description=f"best of {len(results)} pairs by {metric} "
                                 f"({best[metric]:.4f}, {best['task']} task) in a prompt search")



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
