"""``photocritic explain``: per attribute a score (1-10) and the
best-matching description, plus the overall score, for each image.

Where each part comes from, by model:

* **attribute scores**: a model whose method predicts them (``train
  attributes``: trained heads; a ``pretrain multiattr`` directory: zero-shot
  from each attribute space); else, for any other method on a
  multi-attribute backbone, that backbone's zero-shot attribute scores;
  else, for a model with a contrastive image-text
  space (CLIP, SigLIP, VILA-P), zero-shot in that one space with the good/bad
  prompts of :func:`~photocritic.methods.multiattr.default_prompts` for the
  seven default attributes (CLIP-IQA's antonym rule). Any other model cannot
  explain: a usage error (exit 2);
* **descriptions**: with a multi-attribute backbone, the training
  description nearest to the image in that attribute's space; with a VILA-P
  backbone, a critique generated from the attribute's name as a prefix
  ("the lighting ..."); otherwise none;
* **overall score**: the model's own score, as ``score`` gives it.

Images are decoded as for scoring: a bad file gets a row with its status and
message, and every other file is explained.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .errors import UsageError


@dataclass
class ExplainRow:
    path: str
    score: float = math.nan
    attributes: dict = field(default_factory=dict)
    descriptions: dict = field(default_factory=dict)
    status: str = "pending"
    error: str = ""
    #: the run's attributes (every row has these columns, a failed one empty)
    names: tuple = ()

    def as_dict(self, extra=()) -> dict:
        def num(v):
            return None if v is None or not np.isfinite(v) else float(v)

        out = {"path": self.path, "score": num(self.score)}
        for a in self.names:
            out[a] = num(self.attributes.get(a))
        for a in self.names:
            out[f"{a}_description"] = self.descriptions.get(a, "")
        out.update(status=self.status, error=self.error)
        return out

    def lowest(self) -> str | None:
        """The attribute with the lowest score (what to fix first)."""
        got = {a: v for a, v in self.attributes.items() if np.isfinite(v)}
        return min(got, key=got.get) if got else None


def columns(names) -> list[str]:
    return ["path", "score", *names, *(f"{a}_description" for a in names), "status", "error"]


class Explainer:
    """What ``critic`` can say per attribute (module docstring)."""

    def __init__(self, critic, describe: bool = True, max_tokens: int = 24):
        from .data.attributes import DEFAULT_ATTRIBUTES
        from .zoo import encoder_capabilities

        self.critic, self.max_tokens = critic, max_tokens
        head = critic._head()
        if critic.encoder_spec is None or critic.reads_tokens:
            raise UsageError(f"model {critic.name} scores from tokens or comments; explain needs a model "
                             f"with attribute scores or an image-text space")
        caps = encoder_capabilities(critic.encoder_spec)
        if getattr(head, "has_attributes", False):
            self.names, self.zero_shot = list(head.attributes), None
        elif "attribute_spaces" in caps:  # e.g. linear on a multiattr backbone: its spaces' zero-shot scores
            self.names, self.zero_shot = list(critic.encoder.attributes), "spaces"
        elif "contrastive" in caps:
            self.names, self.zero_shot = list(DEFAULT_ATTRIBUTES), "prompts"
        else:
            raise UsageError(f"model {critic.name} has no attribute scores: train per-attribute heads "
                             f"(`photocritic train attributes --attribute-labels ...`), pretrain one "
                             f"(`photocritic pretrain multiattr`), or use a CLIP/SigLIP/VILA-P model")
        self.source = None
        if describe and "attribute_spaces" in caps:
            self.source = "retrieved"
        elif describe and "captioner" in caps:
            self.source = "generated"

    def _prompt_scores(self, out) -> np.ndarray:
        from .methods.multiattr import antonym_scores, default_prompts

        pairs = [default_prompts(a) for a in self.names]
        flat = [t for p in pairs for pair in p for t in pair]
        vec = self.critic.text_embeddings(flat)
        vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        prompts = vec.reshape(len(self.names), len(pairs[0]), 2, -1)
        img = out.pooled.float().cpu().numpy()
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        e = np.repeat(img[:, None, :], len(self.names), axis=1)
        return antonym_scores(e, prompts, np.full(len(self.names), self.critic.logit_scale()))

    def __call__(self, rows, idx: list[int], pixels: torch.Tensor) -> None:
        critic = self.critic
        out = critic.encode_pixels(pixels)
        emb = critic.view_of(out)
        score = critic.outputs_from_embeddings(emb)["score"]
        if self.zero_shot == "prompts":
            att = self._prompt_scores(out)
        elif self.zero_shot == "spaces":
            att = critic.encoder.zero_shot_attributes(out.extras["spaces"])
        else:
            att = critic._head().predict(critic.features(emb)).attributes
        texts = self._describe(out, pixels) if self.source else {}
        for r, i in enumerate(idx):
            row = rows[i]
            row.score = float(score[r])
            row.attributes = {a: float(att[r, k]) for k, a in enumerate(self.names)}
            row.descriptions = {a: texts[a][r] for a in texts}
            row.status = "ok"

    def _describe(self, out, pixels) -> dict[str, list[str]]:
        from .methods.multiattr import attribute_noun
        from .models import PRECISIONS

        enc = self.critic.encoder
        found = {}
        if self.source == "retrieved":
            spaces = out.extras["spaces"].float().cpu()
            for a in self.names:
                if a in enc.spaces:
                    s = enc.spaces.index(a)
                elif len(enc.spaces) == 1:
                    s = 0
                else:
                    continue
                found[a] = enc.bank.nearest(spaces[:, s], s)[0]
            return found
        x = self.critic.preprocess.normalize(pixels).to(PRECISIONS[self.critic.precision])
        for a in self.names:
            found[a] = enc.generate(x, max_tokens=self.max_tokens, prefix=f"the {attribute_noun(a)}")
        return found


def explain_inputs(critic, inputs: list, batch_size: int = 16, workers: int | None = None, progress: bool = False,
                   decode: str = "auto", max_bytes: int | None = None, describe: bool = True,
                   max_tokens: int = 24) -> "ExplainRows":
    """One :class:`ExplainRow` per input, in order; ``rows.names`` are the attributes."""
    from .pipeline import _name, each_batch

    explainer = Explainer(critic, describe=describe, max_tokens=max_tokens)
    names = tuple(explainer.names)
    rows = ExplainRows([ExplainRow(path=f"<image {i}>" if isinstance(x, Image.Image) else _name(x), names=names)
                        for i, x in enumerate(inputs)], names, explainer.source)
    each_batch(critic, inputs, rows, lambda idx, px: explainer(rows, idx, px), batch_size=batch_size,
               workers=workers, decode=decode, max_bytes=max_bytes, progress=progress, desc="explaining",
               verb="explained")
    return rows


class ExplainRows(list):
    """The rows of one explain run, with the attribute ``names`` and where
    the descriptions came from (``source``: retrieved, generated or None)."""

    def __init__(self, rows, names, source):
        super().__init__(rows)
        self.names, self.source = list(names), source


def format_explanations(rows: ExplainRows, width: int = 60) -> str:
    """The terminal table: per image its overall score, then per attribute a
    bar, the score and the description; failed files at the end."""
    lines = []
    name_w = max([len(a) for a in rows.names] + [7])
    for r in sorted((r for r in rows if r.status == "ok"), key=lambda r: -r.score):
        lines.append(f"{r.path}  overall {r.score:.2f}")
        low = r.lowest()
        for a in rows.names:
            v = r.attributes.get(a, math.nan)
            bar = "#" * int(round(v)) if np.isfinite(v) else ""
            text = r.descriptions.get(a, "")
            if len(text) > width:
                text = text[:width - 1] + "…"
            mark = "<" if a == low else " "
            lines.append(f"  {a:<{name_w}} {v:5.2f} {bar:<10}{mark} {text}".rstrip())
        lines.append("")
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        lines.append("not explained:")
        lines += [f"  {r.status:<11} {r.error}" for r in bad]
    return "\n".join(lines).rstrip()


def write_html(rows: ExplainRows, path, thumb: int = 240) -> None:
    """A self-contained page: each photo (an inline thumbnail), its overall
    score, its attribute bars and descriptions; failed files listed."""
    from pathlib import Path

    from .report import thumbnail_uri

    cards = []
    for r in sorted((r for r in rows if r.status == "ok"), key=lambda r: -r.score):
        low = r.lowest()
        bars = []
        for a in rows.names:
            v = r.attributes.get(a, math.nan)
            pct = 0 if not np.isfinite(v) else max(0.0, min(100.0, (v - 1) / 9 * 100))
            cls = "bar low" if a == low else "bar"
            bars.append(f'<div class="attr"><span class="name">{html.escape(a.replace("_", " "))}</span>'
                        f'<span class="{cls}" style="width:{pct:.0f}%"></span><span class="val">{v:.1f}</span>'
                        f'<div class="desc">{html.escape(r.descriptions.get(a, ""))}</div></div>')
        src = thumbnail_uri(r.path, thumb)
        img = f'<img src="{src}" alt="{html.escape(r.path)}">' if src else '<div class="noimg">no preview</div>'
        cards.append(f'<div class="card">{img}<div class="info"><div class="path">{html.escape(r.path)}</div>'
                     f'<div class="overall">overall {r.score:.2f}</div>{"".join(bars)}</div></div>')
    bad = [r for r in rows if r.status != "ok"]
    failed = "" if not bad else "<h2>Not explained</h2><ul>" + "".join(
        f"<li><b>{html.escape(r.status)}</b> {html.escape(r.error)}</li>" for r in bad) + "</ul>"
    source = {"retrieved": "descriptions retrieved from the training descriptions",
              "generated": "descriptions generated by the model"}.get(rows.source, "no descriptions")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>photocritic explain</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.card {{ display: flex; gap: 1.2em; border-bottom: 1px solid #ddd; padding: 1em 0; }}
.card img {{ max-width: {thumb}px; max-height: {thumb}px; border-radius: 4px; }}
.info {{ flex: 1; }} .path {{ font-family: monospace; color: #555; }}
.overall {{ font-size: 1.3em; font-weight: 600; margin: .3em 0 .6em; }}
.attr {{ margin: .25em 0; }} .name {{ display: inline-block; width: 11em; }}
.bar {{ display: inline-block; height: .8em; background: #3465a4; vertical-align: middle; max-width: 14em; }}
.bar.low {{ background: #cc0000; }} .val {{ margin-left: .5em; font-variant-numeric: tabular-nums; }}
.desc {{ margin-left: 11em; color: #555; font-size: .9em; }}
</style></head><body>
<h1>photocritic explain</h1>
<p>{len(rows)} images, sorted by overall score; per attribute a score from 1 to 10 (the lowest in red);
{source}.</p>
{"".join(cards)}
{failed}
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
