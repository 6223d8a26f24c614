"""Zero-shot photographic style classification for AVA's 14 styles (as in
VILA's zero-shot style evaluation): each style's prompts are embedded and
averaged into one vector (a prompt ensemble); an image's score for a style is
its cosine similarity to that vector. Evaluated with mean average precision
on AVA's multi-label style test list."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import mean_average_precision

#: Readable names for the style ids of AVA's ``styles.txt``.
STYLE_PHRASES = {
    "Complementary_Colors": "complementary colors",
    "Duotones": "duotones",
    "HDR": "HDR",
    "Image_Grain": "image grain",
    "Light_On_White": "light on white",
    "Long_Exposure": "long exposure",
    "Macro": "macro",
    "Motion_Blur": "motion blur",
    "Negative_Image": "negative image",
    "Rule_of_Thirds": "rule of thirds",
    "Shallow_DOF": "shallow depth of field",
    "Silhouettes": "silhouettes",
    "Soft_Focus": "soft focus",
    "Vanishing_Point": "vanishing point",
}
TEMPLATES = ["a photo with {style}", "a {style} photo", "a photograph showing {style}",
             "an image with {style}"]
#: VILA reports zero-shot style mAP with a single prompt and with a prompt
#: ensemble; these templates are this project's own (the paper's were not
#: published): ``single`` uses the first, ``ensemble`` averages all four.
VARIANTS = {"single": TEMPLATES[:1], "ensemble": TEMPLATES}


def style_prompts(names: list[str], templates: list[str] = TEMPLATES) -> list[list[str]]:
    return [[t.format(style=STYLE_PHRASES.get(n, n.replace("_", " ").lower())) for t in templates]
            for n in names]


def style_scores(image_emb, prompt_emb: np.ndarray, n_templates: int) -> np.ndarray:
    """(N, S) cosine similarities of images to the averaged prompts of each style.
    ``prompt_emb`` holds S * n_templates rows, style by style."""
    t = F.normalize(torch.as_tensor(np.asarray(prompt_emb), dtype=torch.float32), dim=-1)
    per_style = F.normalize(t.view(-1, n_templates, t.shape[-1]).mean(1), dim=-1)
    x = F.normalize(torch.as_tensor(np.asarray(image_emb), dtype=torch.float32), dim=-1)
    return (x @ per_style.T).numpy()


def evaluate(labels: np.ndarray, scores: np.ndarray, names: list[str]) -> dict:
    macro, per = mean_average_precision(labels, scores)
    return {"map": macro, "n": int(len(labels)),
            "ap": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, per)}}
