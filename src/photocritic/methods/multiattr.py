"""Multi-attribute aesthetics (after Huang et al., TPAMI 2024:
"multi-modality multi-attribute contrastive pre-training").

The pretrained model (:class:`MultiAttrNet`, trained by ``photocritic
pretrain multiattr``, :mod:`photocritic.training.multiattr`) sits on an image
tower (any backbone; frozen with adapters, or trained) and a frozen sentence
encoder for the attribute descriptions. Our architecture (the paper's exact
layers are not in our sources):

* **adapters**: f = z + U gelu(D z) on the tower's pooled feature p
  standardised (z, by its training mean and deviation per channel; the
  same on its tokens), U zero-initialised, so training starts at the
  tower's own features. f is the pretrained image
  representation (the ``image.pooled`` view of the pretrained backbone): the
  only non-linear path from p to the spaces, so what the attribute spaces
  need of p must be learnt into f;
* **per-attribute fusion**: each space s has an attribute text feature a_s
  (the sentence encoder's embedding of the attribute's name, fixed). It
  gates f (h_s = f * (1 + G a_s), G zero-initialised) and, where the tower
  has tokens, queries them: z_s, an attention pool of the adapted tokens
  with the query Q a_s, adds O z_s (O zero-initialised);
* **projection heads**: x_s = P_s h_s (image side) and y_s = Q_s(u + T ln(u))
  (text side, u the description's sentence embedding, T zero-initialised),
  one d-wide space per attribute, compared by cosine with a learnt logit
  scale per space (initialised to 1 / 0.07);
* **losses** (:mod:`photocritic.losses`): the per-attribute InfoNCE over the
  present descriptions, plus ``affinity`` (default 10) x the semantic
  affinity loss against the initial tower's p, standardised as the adapter
  does. With ``affinity_on="spaces"`` (the default) it is the mean over the
  spaces of the gap between the images' cosine similarities in that space
  (x_s) and in p (:func:`~photocritic.losses.space_affinity_loss`): the
  spaces are what the attribute heads read, and the contrastive loss alone
  lets images of unlike content but like descriptions meet there. With
  ``"features"`` it is the gap between f's and p's (0 at the start, since
  f starts at p standardised); on a frozen tower f barely moves, so this
  form keeps nothing the spaces lose (benchmarks/multiattr.py). The gap
  itself has two forms (``affinity_form``): ``"gram"``, the mean squared
  difference of every pair's cosine
  (:func:`~photocritic.losses.semantic_affinity_loss`), and
  ``"neighbours"``, the KL between each image's softmaxed similarities to
  the others under p and under the learnt representation
  (:func:`~photocritic.losses.neighbour_affinity_loss`), which keeps only
  each image's near neighbours and leaves the rest of the space to the
  contrastive loss.

``spaces="single"`` is the ablation: one space of width K d (the same
parameters in the projections) matched to all of an image's descriptions
joined into one text.

Registered methods: ``multiattr`` (zero-shot per-attribute scores from the
spaces with good/bad attribute prompts, the overall score their mean) and
``attributes`` (a ridge head per attribute on any backbone's features, plus
one for the overall score: ``photocritic train attributes``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..registry import register_method
from .base import Method, Prediction, Targets

#: the good/bad grades the default zero-shot prompts use per attribute
GOOD_GRADES = ("excellent", "good")
BAD_GRADES = ("very poor", "poor")
#: the single space's name
SINGLE = "aesthetics"


def attribute_noun(name: str) -> str:
    return name.replace("_", " ")


def attribute_query_text(name: str) -> str:
    """The text whose embedding is the attribute feature a_s of a space."""
    return f"the {attribute_noun(name)} of the photo"


def default_prompts(name: str) -> list[tuple[str, str]]:
    """(good, bad) prompt pairs of one attribute: "excellent lighting" / "very poor lighting", ..."""
    noun = attribute_noun(name)
    return [(f"{g} {noun}", f"{b} {noun}") for g, b in zip(GOOD_GRADES, BAD_GRADES)]


class Adapter(nn.Module):
    """z + U gelu(D z), z = (x - m) / s: the tower's feature standardised by
    its training mean and standard deviation per channel (fixed buffers, set
    by :meth:`standardise`; unlike a layer norm this keeps each image's
    overall level and energy, which carry exposure and sharpness), plus a
    bottleneck MLP whose U starts at zero, so training starts at the tower's
    own features on a unit scale."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def standardise(self, x: np.ndarray) -> None:
        """Set the buffers from training features x (..., dim)."""
        from .base import column_stats

        mean, std = column_stats(np.asarray(x).reshape(-1, x.shape[-1]))
        self.mean.copy_(torch.from_numpy(mean).float())
        self.std.copy_(torch.from_numpy(std).float())

    def standardised(self, x):
        return (x - self.mean) / self.std

    def forward(self, x):
        z = self.standardised(x)
        return z + self.up(nn.functional.gelu(self.down(z)))


class MultiAttrNet(nn.Module):
    """Image side: tower features -> (f, per-space embeddings); text side:
    description embeddings -> per-space embeddings (module docstring).

    ``config``: ``dim`` (the tower's pooled width), ``token_dim`` (its token
    width, or None to fuse the pooled feature only), ``text_dim``,
    ``spaces`` (the space names: the attributes, or one), ``space_dim``,
    ``adapter_dim``, ``hidden`` (the attention pool's width)."""

    def __init__(self, config: dict, attribute_features: torch.Tensor | None = None):
        super().__init__()
        self.config = dict(config)
        c, dt, k = config["dim"], config["text_dim"], len(config["spaces"])
        d, h = config["space_dim"], config["hidden"]
        self.register_buffer("attribute_features", torch.zeros(k, dt) if attribute_features is None
                             else attribute_features.float().clone())
        self.adapter = Adapter(c, config["adapter_dim"])
        tdim = config.get("token_dim")
        if tdim:
            self.token_adapter = Adapter(tdim, config["adapter_dim"])
            self.pool_query = nn.Linear(dt, h)
            self.pool_key = nn.Linear(tdim, h, bias=False)  # a key bias shifts every logit alike: no effect
            self.pool_value = nn.Linear(tdim, h)
            self.pool_out = nn.Linear(h, c)
            nn.init.zeros_(self.pool_out.weight)
            nn.init.zeros_(self.pool_out.bias)
        self.gate = nn.Linear(dt, c)  # per-attribute gates 1 + W a_s, starting at 1
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.image_proj = nn.Parameter(torch.randn(k, c, d) / math.sqrt(c))
        self.text_norm = nn.LayerNorm(dt)
        self.text_mlp = nn.Linear(dt, dt)
        nn.init.zeros_(self.text_mlp.weight)
        nn.init.zeros_(self.text_mlp.bias)
        self.text_proj = nn.Parameter(torch.randn(k, dt, d) / math.sqrt(dt))
        self.logit_scale = nn.Parameter(torch.full((k,), math.log(1 / 0.07)))

    @property
    def spaces(self) -> list[str]:
        return list(self.config["spaces"])

    def image(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None,
              token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f (N, C), normalised space embeddings (N, K, d)):
        h_s = f * (1 + G a_s) + O z_s, x_s = P_s h_s, z_s the attention pool
        of the adapted tokens with the query Q a_s (no tokens: z_s = 0)."""
        f = self.adapter(pooled.float())
        a = self.attribute_features
        h = f[:, None, :] * (1 + self.gate(a))[None]
        if self.config.get("token_dim") and tokens is not None:
            x = self.token_adapter(tokens.float())
            q = self.pool_query(a)  # (K, h)
            logits = torch.einsum("kh,nth->nkt", q, self.pool_key(x)) / math.sqrt(self.config["hidden"])
            if token_mask is not None:
                logits = logits.masked_fill(~token_mask.bool()[:, None, :], float("-inf"))
            z = torch.einsum("nkt,nth->nkh", logits.softmax(-1), self.pool_value(x))
            h = h + self.pool_out(z)
        e = torch.einsum("nkc,kcd->nkd", h, self.image_proj)
        return f, nn.functional.normalize(e, dim=-1)

    def forward(self, pooled, tokens, text):
        """(f, image space embeddings (N, K, d), text space embeddings (N, K, d))
        of a batch whose descriptions ``text`` are (N, K, Dt)."""
        f, e = self.image(pooled, tokens)
        return f, e, self.text(text)

    def text(self, u: torch.Tensor, space: torch.Tensor | int | None = None) -> torch.Tensor:
        """Description embeddings u (..., Dt) into their spaces: with
        ``space`` None, u is (N, K, Dt) (one per space); else u (M, Dt) and
        ``space`` the space of each (an int for all)."""
        u = u.float()
        v = u + self.text_mlp(self.text_norm(u))
        if space is None:
            y = torch.einsum("nkt,ktd->nkd", v, self.text_proj)
        else:
            w = self.text_proj[space]
            y = v @ w if isinstance(space, int) else torch.einsum("mt,mtd->md", v, w)
        return nn.functional.normalize(y, dim=-1)


# -- zero-shot attribute scores -------------------------------------------------
def antonym_scores(e: np.ndarray, prompts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-space CLIP-IQA antonym rule: for space s, P pairs of (good, bad)
    prompt embeddings ``prompts`` (K, P, 2, d) and the space's logit scale,
    p_s = mean over pairs of softmax(t_s [x.g, x.b])_good; score 1 + 9 p_s.
    ``e``: (N, K, d) normalised image embeddings -> (N, K) scores."""
    e = np.asarray(e, np.float64)
    sims = np.einsum("nkd,kpcd->nkpc", e, np.asarray(prompts, np.float64)) * np.asarray(scale)[None, :, None, None]
    diff = sims[..., 1] - sims[..., 0]
    p_good = 1.0 / (1.0 + np.exp(np.clip(diff, -700, 700)))
    return 1.0 + 9.0 * p_good.mean(axis=2)


@register_method("multiattr")
class AttributeZeroShot(Method):
    """The pretrained multi-attribute model as a scorer: per-attribute scores
    from each attribute space with good/bad prompts (:func:`antonym_scores`;
    a single-space model asks its one space about each attribute) and the
    overall score their mean. Reads ``image.attributes``; the prompts'
    embeddings are stored with it, so scoring needs no text encoder."""

    requires = ("image.attributes",)
    not_exportable = "per-attribute outputs are not part of the ONNX export (score and distribution only)"
    has_attributes = True
    trained_by = "photocritic pretrain multiattr --init MODEL --attributes PATH --images DIR --output DIR"

    def __init__(self, attributes: tuple = (), spaces: tuple = (), prompts: dict | None = None):
        self.attributes = list(attributes)
        self.spaces = list(spaces)
        self.prompts = prompts

    def fit(self, features, targets, val=None, on_epoch=None):
        from ..errors import UsageError

        raise UsageError(f"multiattr is pretrained with `{self.trained_by}`")

    def set_embeddings(self, prompt_embeddings: np.ndarray, scales: np.ndarray) -> "AttributeZeroShot":
        """(A, P, 2, d) prompt embeddings, each in its attribute's space, and
        the (A,) logit scales of those spaces."""
        self.prompt_embeddings_ = np.asarray(prompt_embeddings, np.float32)
        self.scales_ = np.asarray(scales, np.float32)
        return self

    def space_of(self, attribute: int) -> int:
        return attribute if len(self.spaces) > 1 else 0

    def attribute_scores(self, features: dict) -> np.ndarray:
        e = np.asarray(features["image.attributes"], np.float32)
        e = e.reshape(len(e), len(self.spaces), -1)
        picked = e[:, [self.space_of(a) for a in range(len(self.attributes))]]
        return antonym_scores(picked, self.prompt_embeddings_, self.scales_)

    def predict(self, features) -> Prediction:
        att = self.attribute_scores(features)
        return Prediction(att.mean(axis=1), attributes=att)

    def state_dict(self):
        return {"prompts": torch.from_numpy(self.prompt_embeddings_), "scales": torch.from_numpy(self.scales_)}

    def load_state(self, state, meta):
        return self.set_embeddings(state["prompts"].float().numpy(), state["scales"].float().numpy())


# -- trained per-attribute heads -------------------------------------------------
@register_method("attributes")
class AttributeHeads(Method):
    """A ridge head per attribute (standardised features, alpha chosen on the
    validation split by SRCC, as ``linear --ridge auto``) and one for the
    overall mean score, on one view of any backbone: ``image.attributes``
    where the backbone is a multi-attribute pretrained model, else
    ``view`` (default ``image.pooled``). Images without a score for an
    attribute are left out of that attribute's fit. Scores are clipped to
    1-10."""

    not_exportable = "per-attribute outputs are not part of the ONNX export (score and distribution only)"

    has_attributes = True
    min_train = 3

    def __init__(self, view: str = "auto", alphas: tuple | None = None):
        self.view = view
        self.alphas = alphas

    @property
    def requires(self):  # noqa: F811 - per instance: the view is a parameter
        return ("image.pooled" if self.view == "auto" else self.view,)

    def choose_view(self, views: set) -> None:
        """``auto``: the attribute spaces where the backbone has them."""
        if self.view == "auto":
            self.view = "image.attributes" if "image.attributes" in views else "image.pooled"

    def _probe(self):
        from .linear import DEFAULT_ALPHAS, LinearProbe

        return LinearProbe(ridge="auto", alphas=tuple(self.alphas or DEFAULT_ALPHAS), view=self.view)

    def fit(self, features, targets: Targets, val=None, on_epoch=None) -> "AttributeHeads":
        from ..errors import DataError

        if targets.attributes is None or val is None or val[1].attributes is None:
            raise DataError("train attributes needs per-attribute scores: pass --attribute-labels PATH")
        self.attributes = list(targets.attribute_names)
        vf, vt = val
        self.overall_ = self._probe().fit(features, targets, val=val)
        self.heads_ = []
        for a, name in enumerate(self.attributes):
            have, vhave = np.isfinite(targets.attributes[:, a]), np.isfinite(vt.attributes[:, a])
            if have.sum() < self.min_train or vhave.sum() < 2:
                raise DataError(f"attribute {name}: {int(have.sum())} training and {int(vhave.sum())} validation "
                                f"images have a score (needs {self.min_train} and 2)")
            sub = {self.view: np.asarray(features[self.view])[have]}
            vsub = {self.view: np.asarray(vf[self.view])[vhave]}
            self.heads_.append(self._probe().fit(sub, Targets(targets.attributes[have, a]),
                                                 val=(vsub, Targets(vt.attributes[vhave, a]))))
        if on_epoch:
            on_epoch(1, float(np.mean((self.overall_.predict(features).score - targets.mean) ** 2)))
        return self

    def predict(self, features) -> Prediction:
        att = np.stack([h.predict(features).score for h in self.heads_], axis=1) if self.heads_ else None
        return Prediction(np.clip(self.overall_.predict(features).score, 1, 10),
                          attributes=None if att is None else np.clip(att, 1, 10))

    def state_dict(self):
        out = {f"overall.{k}": v for k, v in self.overall_.state_dict().items()}
        for a, h in enumerate(self.heads_):
            out.update({f"attr{a}.{k}": v for k, v in h.state_dict().items()})
        return out

    def meta(self) -> dict:
        return {"attributes": self.attributes, "alphas": [self.overall_.alpha_] + [h.alpha_ for h in self.heads_],
                "view": self.view}

    def load_state(self, state, meta):
        self.attributes = list(meta["attributes"])
        self.view = meta.get("view", self.view)
        alphas = meta.get("alphas", [0.0] * (len(self.attributes) + 1))

        def part(prefix, alpha):
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            return self._probe().load_state(sub, {"alpha": alpha})
        self.overall_ = part("overall.", alphas[0])
        self.heads_ = [part(f"attr{a}.", alphas[a + 1]) for a in range(len(self.attributes))]
        return self
