"""A scoring model = a backbone (image encoder) + a method + a map to 1-10.

A model is a directory, loadable by :func:`photocritic.load` like Hugging
Face's ``from_pretrained``:

* ``config.json``: ``{"format": "photocritic-model", "version": 2, "name",
  "description", "backbone": {...}, "method": {"type", "params", "meta"},
  "score_map": {...}}``; ``method.type`` names a registry entry
  (:mod:`photocritic.registry`), ``params`` its constructor arguments,
  ``meta`` the shapes needed to rebuild its modules;
* ``model.safetensors``: the method's tensors;
* ``backbone.safetensors`` when the image tower was fine-tuned (the
  backbone spec then says ``"weights": "backbone.safetensors"``).

Version-1 directories (``encoder`` + ``head.safetensors``/``head.json``, as
the shipped ``lite`` model) are still read. Named presets live in
:mod:`photocritic.zoo`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .encoders.base import ModelNotAvailableError
from .errors import ModelFormatError
from .features import EmbeddingCache, content_hash
from .methods.base import Method
from .methods.zeroshot import PromptSet, ZeroShot
from .registry import method_class
from .scoremap import ScoreMap

FORMAT = "photocritic-model"
VERSION = 2
#: image views each backbone type provides
BACKBONE_VIEWS = ("image.pooled", "image.prelogits", "image.tokens", "image.attributes")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}

#: How each zero-shot rule classifies binary (1 = good); regression heads use score > 5.
BINARY_RULES = {
    "antonym": "P(positive prompt) > 0.5 (softmax of the logit-scaled cosines, averaged over pairs)",
    "weighted_sum": "sign of cos(positive) - cos(negative), i.e. the nearest label",
    "ensemble": "sign of cos(positive) - cos(negative) to the averaged label vectors, "
                "i.e. the nearest label",
    "context": "label of the most similar of the context prompts (Hentschel et al. 2022)",
}
REGRESSION_RULE = "predicted score > 5"


def build_encoder(spec: dict, device: str = "cpu"):
    kind = spec["type"]
    if kind == "efficientnet-lite0":
        from .encoders.efficientnet import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder(device=device, tuned=spec.get("weights"))
    if kind == "hf":
        from .encoders.hf import HFVisionLanguageEncoder

        return HFVisionLanguageEncoder(spec["name"], device=device, tuned=spec.get("weights"))
    if kind == "coca":
        from .encoders.coca import CoCaEncoder

        return CoCaEncoder(spec["name"], device=device, tuned=spec.get("weights"))
    if kind == "multiattr":
        from .encoders.multiattr import MultiAttrEncoder

        return MultiAttrEncoder(spec["name"], device=device, tuned=spec.get("weights"))
    raise ValueError(f"unknown encoder type {kind!r} (known: efficientnet-lite0, hf, coca, multiattr)")


def encoder_identity(spec: dict):
    """(id, preprocess) of an encoder spec, without loading any weights."""
    from .encoders.base import tuned_suffix

    if spec["type"] == "efficientnet-lite0":
        from .encoders.efficientnet import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder.id + tuned_suffix(spec.get("weights")), EfficientNetLite0Encoder.preprocess
    if spec["type"] == "hf":
        from transformers import AutoConfig

        from .encoders.hf import _fingerprint, _load_pretrained, _preprocess_from

        config = _load_pretrained(AutoConfig.from_pretrained, spec["name"])
        return (f"hf:{_fingerprint(spec['name'])}" + tuned_suffix(spec.get("weights")),
                _preprocess_from(spec["name"], config))
    if spec["type"] == "coca":
        from .encoders.coca import coca_identity

        return coca_identity(spec["name"], spec.get("weights"))
    if spec["type"] == "multiattr":
        from .encoders.multiattr import multiattr_identity

        return multiattr_identity(spec["name"])
    raise ValueError(f"unknown encoder type {spec['type']!r}")


class Critic:
    """Scores images. Use :func:`photocritic.load` to get one.

    The encoder is loaded on first use, so a run whose embeddings are all
    cached never loads it.
    """

    def __init__(self, encoder_spec: dict, head: Method | None, score_map: ScoreMap,
                 name: str = "", description: str = "", device: str = "cpu",
                 precision: str = "fp32", prompts: PromptSet | None = None):
        self.encoder_spec = encoder_spec
        self.head = head
        self.prompts = prompts
        self.score_map = score_map
        self.name = name
        self.description = description
        self._encoder = None
        self._identity = None
        self.device = device
        self.precision = precision
        self._text_memo: dict[str, np.ndarray] = {}
        self._feature_memo: dict[tuple, dict] = {}
        self._lock = threading.RLock()
        self.directory: Path | None = None  # where it was loaded from
        self._text_encoder = None
        self._bank = None

    # -- configuration -------------------------------------------------
    def configure(self, device: str | None = None, precision: str | None = None) -> "Critic":
        """Set the device (checked to exist here) and the precision
        (``auto``: bf16 where it is fast, else fp32; see :mod:`photocritic.device`)."""
        from .device import resolve_precision, validate_device

        before = (self.device, self.precision)
        if device is not None:
            self.device = validate_device(device)
        if precision is not None:
            self.precision = resolve_precision(precision, self.device)
        if (self.device, self.precision) != before:  # text features of the old setting are stale
            self._text_memo.clear()
            self._feature_memo.clear()
        if self._encoder is not None:
            if self.precision != before[1]:  # a cast to bf16 and back would keep bf16-rounded
                self._encoder = None         # weights: load them again, at the new precision
            else:
                self._apply_device()
        return self

    def _apply_device(self):
        enc = self._encoder
        module = enc.model
        module.to(device=self.device, dtype=PRECISIONS[self.precision])
        enc.device = torch.device(self.device)

    @property
    def encoder(self):
        with self._lock:  # loaded once, also when two threads score at once
            if self._encoder is None:
                parent = getattr(self, "_parent", None)
                if parent is not None:  # a with_view copy: the one encoder of its model
                    self._encoder = parent.encoder
                else:
                    self._encoder = build_encoder(self.encoder_spec, self.device)
                    self._apply_device()
        return self._encoder

    @property
    def reads_tokens(self) -> bool:
        """True for methods on token views (MMLQ): scored through
        :func:`photocritic.tokeninputs.score_token_model`."""
        return isinstance(self.head, Method) and any(v.endswith(".tokens") for v in self.head.requires)

    @property
    def reads_comments(self) -> bool:
        return isinstance(self.head, Method) and "text.tokens" in self.head.requires

    @property
    def text_encoder(self):
        """The method's own comment encoder (MMLQ's ``text_encoder``), loaded once."""
        from .encoders.text import text_encoder

        with self._lock:
            if self._text_encoder is None:
                self._text_encoder = text_encoder(self.head.text_encoder, device=self.device)
        return self._text_encoder

    @property
    def comment_bank(self):
        """The comment bank a model trained with ``--retrieve-comments`` keeps
        (``comment_bank/`` in its directory)."""
        from .errors import UsageError
        from .retrieval import BANK_DIR, CommentBank

        with self._lock:
            if self._bank is None:
                if self.directory is None or not (self.directory / BANK_DIR).is_dir():
                    raise UsageError(f"model {self.name} has no comment bank to retrieve comments from "
                                     f"(train it with --retrieve-comments K)")
                self._bank = CommentBank.load(self.directory)
        return self._bank

    def _ident(self):
        if self._identity is None:
            if self._encoder is not None:
                self._identity = (self._encoder.id, self._encoder.preprocess)
            else:
                self._identity = encoder_identity(self.encoder_spec)
        return self._identity

    @property
    def preprocess(self):
        return self._ident()[1]

    def encoder_key(self) -> str:
        """Cache key of this model's image view: encoder id + preprocessing
        digest + precision (+ the view's name for views other than
        ``image.pooled``, whose key stays as version 1 wrote it)."""
        return self.view_key(self.view)

    def _key(self, part: str | None = None) -> str:
        """encoder id | preprocessing digest | precision [| part]: the store key of one view."""
        enc_id, pre = self._ident()
        base = f"{enc_id}|{pre.key()}|{self.precision}"
        return base if part is None else f"{base}|{part}"

    @property
    def view(self) -> str:
        """The image view the method reads (``image.pooled`` without a method)."""
        return self.head.image_view if isinstance(self.head, Method) else getattr(self, "_view", "image.pooled")

    def with_view(self, view: str) -> "Critic":
        """A head-less copy of this model that extracts ``view`` (for training)."""
        if view not in BACKBONE_VIEWS:
            raise ValueError(f"unknown view {view!r} (known: {', '.join(BACKBONE_VIEWS)})")
        other = Critic(self.encoder_spec, None, self.score_map, name=self.name, device=self.device,
                       precision=self.precision)
        other._view = view
        other._encoder, other._identity = self._encoder, self._identity
        other._parent = self  # loads (once) through this model, when first needed
        return other

    # -- computation -----------------------------------------------------
    def embed(self, pixels_uint8: torch.Tensor) -> np.ndarray:
        """uint8 NHWC batch -> float32 (N, D) features of this model's view."""
        return self.view_of(self.encode_pixels(pixels_uint8))

    def encode_pixels(self, pixels_uint8: torch.Tensor):
        """uint8 NHWC batch -> the encoder's whole output (every view)."""
        x = self.preprocess.normalize(pixels_uint8).to(PRECISIONS[self.precision])
        return self.encoder.encode(x)

    def view_of(self, out, view: str | None = None) -> np.ndarray:
        """This model's view (or ``view``) of an encoder output, float32 on the CPU."""
        view = view or self.view
        if view == "image.pooled":
            return out.pooled.float().cpu().numpy()
        if view == "image.prelogits":
            return out.extras["prelogits"].float().cpu().numpy()
        if view == "image.tokens":  # (N, T, C); goes to a TokenStore
            return out.tokens.float().cpu().numpy()
        if view == "image.attributes":  # (N, K d): the attribute spaces, each normalised
            return out.extras["attributes"].float().cpu().numpy()
        raise ValueError(f"unknown image view {view}")

    def view_key(self, view: str) -> str:
        """The feature-store key of ``view`` of this model's backbone (as
        :meth:`encoder_key` gives it for the model's own view)."""
        return self._key() if view == "image.pooled" else self._key(view)

    def _head(self):
        if self.head is None and self.prompts is not None:
            self.head = ZeroShot(self.prompts)
        return self.head

    def features(self, embeddings: np.ndarray) -> dict:
        """The method's inputs: this model's image view, plus (for methods
        that read text to predict) the text features, extracted once per model."""
        head = self._head()
        out = {self.view: embeddings}
        # only methods that read text when predicting (a VILA-R anchor is
        # needed to fit, then stored with the head)
        texts = head.texts() if "text.pooled" in head.requires else []
        if texts:
            key = (tuple(texts), getattr(head, "needs_logit_scale", False))
            memo = self._feature_memo.get(key)
            if memo is None:
                memo = {"text.pooled": self.text_embeddings(texts)}
                if key[1]:
                    memo["logit_scale"] = self.logit_scale()
                self._feature_memo[key] = memo
            out.update(memo)
        return out

    def text_embeddings(self, texts: list[str], batch_size: int = 256,
                        cache: EmbeddingCache | None = None) -> np.ndarray:
        """The encoder's embeddings of ``texts`` (K, D): computed once per
        model object, and stored in / read from the cache whenever one is
        attached, so a prompt set is embedded once per (encoder, prompt)."""
        key = self.text_key()
        hashes = [content_hash(("text:" + t).encode()) for t in texts]
        stored = cache.get_many(hashes, key) if cache is not None else {}
        for t, h in zip(texts, hashes):
            if t not in self._text_memo and h in stored:
                self._text_memo[t] = stored[h]
        todo = list(dict.fromkeys(t for t in texts if t not in self._text_memo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            with self._lock:
                vecs = self.encoder.encode_text(chunk).float().cpu().numpy()
            self._text_memo.update(zip(chunk, vecs))
        if cache is not None:
            new = [(h, self._text_memo[t]) for t, h in zip(texts, hashes) if h not in stored]
            if new:
                cache.put_many(list(dict(new).items()), key)
        return np.stack([self._text_memo[t] for t in texts])

    def logit_scale(self) -> float:
        """The model's ``logit_scale.exp()``, cached like a text embedding."""
        vec = self._logit_scale_vec()
        return float(vec[0])

    def text_key(self) -> str:
        """Feature-store key of the text view (independent of the image view)."""
        return self._key("text")

    def _logit_scale_vec(self, cache: EmbeddingCache | None = None) -> np.ndarray:
        key = self._key("logit_scale")
        h = content_hash(b"logit_scale")
        stored = cache.get_many([h], key).get(h) if cache is not None else None
        vec = self._text_memo.get("\0logit_scale")
        if vec is None:
            vec = stored if stored is not None else np.array([self.encoder.logit_scale], np.float32)
            self._text_memo["\0logit_scale"] = vec
        if cache is not None and stored is None:
            cache.put_many([(h, vec)], key)
        return vec

    def warm_text(self, cache: EmbeddingCache) -> None:
        """Read this model's text side (prompt embeddings, logit scale) from
        ``cache``, computing and storing what is missing, so that scoring
        never needs the text tower again."""
        if self.prompts is not None:
            self.text_embeddings(self.prompts.expand()[0], cache=cache)
            if self.prompts.rule in ("antonym", "ensemble"):
                self._logit_scale_vec(cache)

    def raw_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return self._head().predict(self.features(embeddings)).score

    def scores_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return self.score_map(self.raw_from_embeddings(embeddings))

    @property
    def binary_rule(self) -> str:
        """How this model classifies an image as good or bad (for accuracy)."""
        return BINARY_RULES[self.prompts.rule] if self.prompts is not None else REGRESSION_RULE

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Output columns beyond path/score/status/error/cached."""
        if isinstance(self.head, Method) and self.head.has_attributes:  # a column per attribute
            return tuple(self.head.attributes)
        if isinstance(self.head, Method) and self.head.has_distribution:
            return ("distribution",)
        return ("context_class",) if self.prompts is not None and self.prompts.rule == "context" else ()

    def outputs_from_embeddings(self, embeddings: np.ndarray) -> dict:
        """``score`` (1-10), ``binary`` (the method's own rule, 1 = good),
        for distribution methods ``distribution`` (N, 10), for methods with
        attribute scores ``attributes`` (N, A) and ``attribute_names``, and,
        for the context rule, ``context_class`` per embedding. A model without a
        method (feature extraction) gives NaN scores."""
        head = self._head()
        if head is None:
            return {"score": np.full(len(embeddings), np.nan)}
        feats = self.features(embeddings)
        if isinstance(head, ZeroShot):
            out = {"score": self.score_map(head.predict(feats).score), "binary": head.predict_binary(feats)}
            if head.prompts.rule == "context":
                out["context_class"] = head.nearest_class(feats)
            return out
        pred = head.predict(feats)
        scores = self.score_map(pred.score)
        out = {"score": scores, "binary": (scores > 5.0).astype(np.int64)}
        if pred.distribution is not None:
            out["distribution"] = pred.distribution
        if pred.attributes is not None:
            out["attributes"], out["attribute_names"] = pred.attributes, list(head.attributes)
        return out

    def score(self, inputs, batch_size: int = 32, cache: EmbeddingCache | str | None = None,
              workers: int | None = None, progress: bool = False, decode: str = "auto",
              max_bytes: int | None = None, comments: dict | str | Path | None = None,
              retrieve: int | None = None, ids: list[str] | None = None, bank_from_inputs: bool = False):
        """Score file paths and/or PIL images; returns one
        :class:`~photocritic.pipeline.ScoreRow` per input, in order
        (``float(row)`` is the 1-10 score, NaN where the input failed; a bad
        file or a bad PIL image gets a failed row, never an exception).
        ``max_bytes``: files larger are ``too_large`` (default 1 GiB).

        Models that read comments (MMLQ) take ``comments``: ``{id: [text,
        ...]}`` or a comments file, an input's id being its file's stem
        (inputs may be bare ids for a comments-only model, whose images are
        never opened). An input without comments gets the status
        ``no_comments``, or, with ``retrieve`` K (default: the model's
        ``--retrieve-comments``), the comments of its K nearest images in
        the model's comment bank — and, with ``bank_from_inputs``, of the
        inputs of this call that have comments. ``ids``: the inputs' ids,
        where they are not the file stems."""
        from .data.images import DEFAULT_MAX_BYTES
        from .pipeline import score_inputs

        if isinstance(inputs, Image.Image):
            inputs = [inputs]
        if isinstance(inputs, (str, Path)) or not hasattr(inputs, "__iter__"):
            inputs = [inputs]
        if self.reads_tokens:
            return self._score_tokens(inputs, comments, retrieve, cache, ids, bank_from_inputs,
                                      batch_size=batch_size,
                                      workers=workers, progress=progress, decode=decode,
                                      max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        if comments is not None:
            from .errors import UsageError

            raise UsageError(f"model {self.name} reads no comments ({self.head.name if self.head else 'zero-shot'}"
                             f"); drop --comments")
        own = isinstance(cache, (str, Path))
        if own:
            cache = EmbeddingCache(cache)
        try:
            if cache is not None:
                self.warm_text(cache)
            rows, stats = score_inputs(
                self, inputs, batch_size=batch_size, cache=cache, workers=workers, progress=progress,
                decode=decode, max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        finally:
            if own:
                cache.close()
        return ScoreRows(rows, stats)

    def critique(self, inputs, max_tokens: int = 64, beams: int = 1, batch_size: int = 16,
                 workers: int | None = None, progress: bool = False, decode: str = "auto",
                 max_bytes: int | None = None, pmi=None):
        """Generated critiques (a model that can generate: VILA-P): one
        :class:`~photocritic.captioning.CritiqueRow` per input (path, critique,
        status, error), greedy with ``beams`` = 1, else beam search; with
        ``pmi`` (True, or a dict of
        :class:`~photocritic.captioning.MutualInformation` settings) the
        sampled critique the image makes likeliest relative to other images.
        A bad file gets its status and message, never an exception."""
        from .captioning import critique_inputs
        from .data.images import DEFAULT_MAX_BYTES

        if isinstance(inputs, (str, Path, Image.Image)):
            inputs = [inputs]
        return critique_inputs(self, inputs, max_tokens=max_tokens, beams=beams, batch_size=batch_size,
                               workers=workers, decode=decode, progress=progress,
                               max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes, pmi=pmi)

    def explain(self, inputs, batch_size: int = 16, workers: int | None = None, progress: bool = False,
                decode: str = "auto", max_bytes: int | None = None, describe: bool = True,
                max_tokens: int = 24):
        """Per-attribute scores (1-10) and the best-matching description of
        each attribute, plus the overall score: one
        :class:`~photocritic.explaining.ExplainRow` per input (see
        :func:`photocritic.explaining.explain_inputs` for where scores and
        descriptions come from). A bad file gets its status, never an exception."""
        from .data.images import DEFAULT_MAX_BYTES
        from .explaining import explain_inputs

        if isinstance(inputs, (str, Path, Image.Image)):
            inputs = [inputs]
        return explain_inputs(self, list(inputs), batch_size=batch_size, workers=workers, progress=progress,
                              decode=decode, max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
                              describe=describe, max_tokens=max_tokens)

    def _score_tokens(self, inputs, comments, retrieve, cache, ids, bank_from_inputs=False, **kw):
        from .errors import UsageError
        from .features import token_session
        from .tokeninputs import score_token_model

        if any(isinstance(x, Image.Image) for x in inputs):
            raise UsageError(f"model {self.name} ({self.head.name}) scores files, not in-memory images")
        if isinstance(comments, (str, Path)):
            from .data.comments import read_comments

            comments = read_comments(Path(comments))
        elif comments is not None:  # keys as a comments file's: "12345.jpg" -> "12345"
            from .data.comments import image_id

            merged: dict[str, list[str]] = {}
            for key, texts in comments.items():
                merged.setdefault(image_id(key), []).extend([texts] if isinstance(texts, str) else texts)
            comments = merged
        if self.reads_comments and comments is None and not retrieve and not getattr(
                self.head, "retrieve_comments", 0):
            raise UsageError(f"model {self.name} reads user comments: pass --comments PATH "
                             f"(inputs: {self.head.inputs})")
        path = cache.path if isinstance(cache, EmbeddingCache) else cache  # None: a temporary store
        pooled = cache if isinstance(cache, EmbeddingCache) else None
        with token_session(path) as (store, _):
            return score_token_model(self, inputs, comments, store, retrieve, pooled_cache=pooled, ids=ids,
                                     bank_from_inputs=bank_from_inputs, **kw)

    def embed_paths(self, paths: list[str], cache: EmbeddingCache, batch_size: int = 32,
                    progress: bool = False, decode: str = "auto", workers: int | None = None,
                    max_bytes: int | None = None):
        """Embeddings of image files through the normal pipeline and cache
        (an in-memory cache, ``EmbeddingCache(None)``, writes nothing):
        returns (rows, embeddings of the rows whose status is ok); the run's
        counts are ``rows.stats``."""
        rows = self.score(paths, batch_size=batch_size, cache=cache, progress=progress, decode=decode,
                          workers=workers, max_bytes=max_bytes)
        from .features import gather

        return rows, gather(cache, self.encoder_key(), [r.content_hash for r in rows if r.status == "ok"], None)

    # -- persistence -----------------------------------------------------
    def save(self, directory: str | Path, half: bool = False, backbone_state: dict | None = None) -> Path:
        """Write the model directory (version 2): ``config.json`` and
        ``model.safetensors`` (fp16 weights with ``half``), plus
        ``backbone.safetensors`` when ``backbone_state`` (a fine-tuned
        tower's weights) is given."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone = None if self.encoder_spec is None else dict(self.encoder_spec)  # None: reads no image
        if backbone is not None:
            backbone.pop("weights", None)
        if backbone_state is not None:
            save_file({k: v.detach().contiguous() for k, v in backbone_state.items()},
                      str(directory / "backbone.safetensors"))
            backbone["weights"] = "backbone.safetensors"
        elif backbone is not None and self.encoder_spec.get("weights"):
            import shutil

            shutil.copyfile(self.encoder_spec["weights"], directory / "backbone.safetensors")
            backbone["weights"] = "backbone.safetensors"
        if self.prompts is not None:
            method = {"type": "zeroshot", "params": {"prompts": self.prompts.to_dict()}}
        elif isinstance(self.head, Method):
            state = self.head.state_dict()
            if half:
                state = {k: v.half() if v.is_floating_point() and v.dtype == torch.float32 else v
                         for k, v in state.items()}
            save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
            method = {"type": self.head.name, "params": self.head.get_params(), "meta": self.head.meta()}
        else:
            raise RuntimeError(f"model {self.name!r} has nothing to save")
        config = {"format": FORMAT, "version": VERSION, "name": self.name,
                  "description": self.description, "backbone": backbone, "method": method,
                  "score_map": self.score_map.to_dict()}
        (directory / "config.json").write_text(json.dumps(config, indent=2, default=_jsonable) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Critic":
        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{directory}: cannot read config.json ({exc})") from None
        if config.get("format") != FORMAT:
            raise ModelFormatError(f"{directory}: config.json is not a photocritic model")
        version = config.get("version", 1)
        if version == 1:
            return cls._load_v1(directory, config)
        if version != VERSION:
            raise ModelFormatError(f"{directory}: model format version {version} is newer than this "
                                   f"photocritic reads ({VERSION}); upgrade photocritic")
        backbone = None if config["backbone"] is None else dict(config["backbone"])
        if backbone is not None and backbone.get("weights"):
            backbone["weights"] = str(directory / backbone["weights"])
        if backbone is not None and backbone["type"] in ("coca", "multiattr") \
                and not Path(backbone["name"]).is_absolute():  # a VILA-P's own coca/, a multiattr/
            backbone["name"] = str((directory / backbone["name"]).resolve())
        m = config["method"]
        prompts = head = None
        if m["type"] == "zeroshot":
            prompts = PromptSet.from_dict(m["params"]["prompts"])
        else:
            from safetensors.torch import load_file

            head = method_class(m["type"])(**m.get("params", {}))
            head.load_state(load_file(str(directory / "model.safetensors")), m.get("meta", {}))
        critic = cls(backbone, head, ScoreMap.from_dict(config["score_map"]),
                     name=config.get("name", directory.name), description=config.get("description", ""),
                     prompts=prompts)
        critic.directory = directory
        return critic

    @classmethod
    def _load_v1(cls, directory: Path, config: dict) -> "Critic":
        method = config.get("method")
        if method not in ("vila_r", "zeroshot"):
            raise ModelFormatError(f"{directory}: unknown method {method!r}")
        head = prompts = None
        if method == "vila_r":
            from safetensors.torch import load_file

            from .methods.vila_r import VilaR

            cfg = json.loads((directory / "head.json").read_text())
            head = VilaR(rank=cfg.get("rank"), margin=cfg.get("margin", 0.1), anchor="mean")
            head.load_state(load_file(str(directory / "head.safetensors")), {"dim": cfg["dim"]})
        else:
            prompts = PromptSet.from_dict(config["prompts"])
        return cls(config["encoder"], head, ScoreMap.from_dict(config["score_map"]),
                   name=config.get("name", directory.name), description=config.get("description", ""),
                   prompts=prompts)


class ScoreRows(list):
    """The rows of one scoring run, in input order, with the run's counts as
    ``stats`` (a :class:`~photocritic.pipeline.RunStats`). The model object
    itself keeps no per-call state: two threads may score with one model."""

    def __init__(self, rows, stats):
        super().__init__(rows)
        self.stats = stats


def _jsonable(x):
    if isinstance(x, (tuple, set)):
        return list(x)
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


AestheticModel = Critic


def is_model_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == FORMAT
    except (ValueError, OSError):
        return False


__all__ = ["AestheticModel", "Critic", "ModelNotAvailableError", "is_model_dir"]
