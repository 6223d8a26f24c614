"""The one small protocol every image encoder follows.

An encoder turns a batch of preprocessed images into a pooled embedding per
image (and, where the backbone has them, token features). It owns its
preprocessing (:class:`Preprocess`) and a stable ``id`` string that, together
with the preprocessing, keys the embedding cache: two encoders with the same
id must give the same embeddings for the same pixels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import EXIT_MODEL, PhotocriticError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: reading and decoding images (Preprocess)
# must not pay for it (Ray's decoding tasks import this module).


@dataclass(frozen=True)
class Preprocess:
    """How raw pixels become the encoder's input tensor.

    ``resize`` is the target of the short side (``mode="shortest"``) or both
    sides (``mode="squash"``); ``crop`` is the side of the centre crop taken
    afterwards (``None`` for no crop). ``mean``/``std`` normalise pixels that
    were first scaled to [0, 1]. ``resample`` is a PIL filter name.
    """

    resize: int = 224
    crop: int | None = 224
    mode: str = "shortest"  # "shortest" or "squash"
    resample: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    jpeg_draft: bool = True

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return (self.crop, self.crop)
        return (self.resize, self.resize)

    def key(self) -> str:
        """A short stable digest of every field; part of the cache key."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def normalize(self, batch_uint8: torch.Tensor, dtype=None) -> torch.Tensor:
        """uint8 NHWC batch -> normalised float NCHW batch (float32 unless ``dtype``)."""
        import torch

        dtype = dtype or torch.float32
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=dtype).view(1, 3, 1, 1)
        offset = torch.tensor([m / s for m, s in zip(self.mean, self.std)], dtype=dtype).view(1, 3, 1, 1)
        x = batch_uint8.permute(0, 3, 1, 2).to(dtype)
        return x.mul_(scale).sub_(offset)  # (x / 255 - mean) / std in two passes


#: What an encoder can do besides encoding images, declared per class:
#: ``contrastive`` (image and text in one space, with a logit scale),
#: ``text_tower`` (encodes text: the ``text.pooled`` view), ``token_text``
#: (per-token text features: ``text.tokens``), ``captioner`` (generates text),
#: ``attribute_spaces`` (per-attribute embeddings: ``image.attributes``).
CAPABILITIES = ("contrastive", "text_tower", "token_text", "captioner", "attribute_spaces")


def views_of(capabilities) -> set[str]:
    """The feature views an encoder with these capabilities provides."""
    views = {"image.pooled", "image.prelogits", "image.tokens"}
    if "text_tower" in capabilities:
        views.add("text.pooled")
    if "token_text" in capabilities:
        views.add("text.tokens")
    if "attribute_spaces" in capabilities:
        views.add("image.attributes")
    return views


@dataclass
class EncoderOutput:
    """``pooled``: (N, D) image embeddings; ``tokens``: (N, T, C) or None."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


@runtime_checkable
class ImageEncoder(Protocol):
    id: str
    dim: int
    preprocess: Preprocess

    def encode(self, pixels: torch.Tensor) -> EncoderOutput:
        """Encode a normalised float batch (N, 3, H, W)."""
        ...

    def to(self, device: str | torch.device) -> "ImageEncoder": ...


class TextEncoder(Protocol):
    id: str
    dim: int

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(N, D) text embeddings, not normalised."""
        ...


class WrappedModel:
    """What the encoders that wrap one torch module (``self.model``, with a
    ``logit_scale`` parameter) share."""

    model: torch.nn.Module

    def to(self, device):
        import torch

        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


class ModelNotAvailableError(PhotocriticError, RuntimeError):
    """Raised when a model's weights cannot be found offline.

    The message names the model and says how to get it.
    """

    exit_code = EXIT_MODEL


def fit_tower_keys(state: dict, expected) -> dict:
    """``state`` with its vision-tower keys named as ``expected`` names them.
    transformers 5 flattened ``CLIPVisionModel`` / ``SiglipVisionModel``
    (``embeddings...``); version 4 nests them (``vision_model.embeddings...``),
    so weights saved under one load under the other (a fine-tuned tower, a CoCa)."""
    expected = set(expected)
    out = {}
    for key, value in state.items():
        if key not in expected:
            candidates = [key.replace("vision_model.", "", 1), "vision_model." + key]
            if key.startswith("vision."):
                candidates.append("vision.vision_model." + key[len("vision."):])
            key = next((c for c in candidates if c in expected), key)
        out[key] = value
    return out


def tuned_suffix(weights: str | None) -> str:
    """The encoder-id suffix of a fine-tuned tower: a digest of its weights
    file, so that a fine-tuned backbone never shares cache entries with the
    original or with another fine-tune."""
    if not weights:
        return ""
    with open(weights, "rb") as fh:
        return f"+tuned:{hashlib.file_digest(fh, 'sha256').hexdigest()[:16]}"
