"""``photocritic export --format onnx`` and scoring with the exported file.

The graph is the whole scorer after decoding: uint8 RGB pixels (N, H, W, 3),
already resized and centre-cropped as ``Preprocess`` says, -> normalisation
-> image tower -> the method's view -> the method -> the score map ->
``score`` (N,) on 1-10, plus ``distribution`` (N, 10) for distribution
methods. Resizing stays outside the graph (it is PIL's resampling on the
decoded file, which ONNX's Resize does not reproduce); the file's metadata
says exactly how to do it (``photocritic.preprocess``, JSON, and the graph's
doc string in words), so any runtime can feed it.

:class:`OnnxCritic` scores with such a file through onnxruntime, in the
same pipeline (decoding, cache, bad files) as every other model: ``photocritic
score --model FILE.onnx``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ModelFormatError, UsageError

OPSET = 17
META_PREFIX = "photocritic."


def _plain_encode(encoder):
    """The encoder's ``encode`` without its ``inference_mode`` wrapper
    (tracing records nothing inside inference mode)."""
    fn = type(encoder).encode
    fn = getattr(fn, "__wrapped__", fn)
    return lambda x: fn(encoder, x)


class ScoringGraph(nn.Module):
    """uint8 NHWC pixels -> (score,) or (score, distribution)."""

    def __init__(self, critic):
        super().__init__()
        head = critic._head()
        if head is None:
            raise UsageError(f"model {critic.name} has no method to score with; nothing to export")
        if critic.reads_tokens or getattr(head, "reads_comments", False):
            raise UsageError(f"method {head.name} cannot be exported to ONNX: {head.not_exportable}")
        pre = critic.preprocess
        self.register_buffer("mul", torch.tensor([1.0 / (255.0 * s) for s in pre.std]).view(1, 3, 1, 1))
        self.register_buffer("sub", torch.tensor([m / s for m, s in zip(pre.mean, pre.std)]).view(1, 3, 1, 1))
        encoder = critic.encoder
        self.tower = encoder.model  # registered, so the weights are the graph's initialisers
        self._encode = _plain_encode(encoder)
        self._view_of = critic.view
        features = critic.features(np.zeros((1, 1), np.float32))  # the text side, when the method reads it
        self.head = head.export_module(features)
        self.distribution = bool(head.has_distribution)
        sm = critic.score_map
        self.map_kind, self.map_center, self.map_scale = sm.kind, float(sm.center), float(sm.scale)

    def forward(self, pixels: torch.Tensor):
        x = pixels.permute(0, 3, 1, 2).float() * self.mul - self.sub
        out = self._encode(x)
        if self._view_of == "image.pooled":
            v = out.pooled
        elif self._view_of == "image.prelogits":
            v = out.extras["prelogits"]
        elif self._view_of == "image.attributes":
            v = out.extras["attributes"]
        else:
            v = out.tokens
        res = self.head(v.float())
        raw, dist = res if isinstance(res, tuple) else (res, None)
        if self.map_kind == "linear":
            score = self.map_center + self.map_scale * raw
        else:
            score = 1.0 + 9.0 / (1.0 + torch.exp(-(raw - self.map_center) / self.map_scale))
        return (score, dist) if self.distribution else score


def preprocess_doc(pre) -> str:
    crop = f", then centre-crop {pre.crop}x{pre.crop}" if pre.crop else ""
    side = "the shorter side to" if pre.mode == "shortest" else "both sides to"
    return (f"Input 'pixels': uint8 RGB, shape (N, H, W, 3) with H, W = {pre.output_size[0]}, "
            f"{pre.output_size[1]}: decode the image (apply its EXIF orientation; RGB), resize {side} "
            f"{pre.resize} px with {pre.resample} resampling{crop}. Normalisation ((x / 255 - mean) / std, "
            f"mean {list(pre.mean)}, std {list(pre.std)}) is inside the graph. Output 'score': the aesthetic "
            f"score on 1-10 per image.")


def export_onnx(critic, output: str | Path, opset: int = OPSET, batch: int = 2) -> dict:
    """Write ``critic`` as one ONNX graph to ``output``; returns its metadata."""
    import onnx

    critic = critic.configure(device="cpu", precision="fp32")
    graph = ScoringGraph(critic).eval()
    pre = critic.preprocess
    h, w = pre.output_size
    dummy = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8)
    outputs = ["score", "distribution"] if graph.distribution else ["score"]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    with torch.no_grad():
        torch.onnx.export(graph, (dummy,), str(tmp), input_names=["pixels"], output_names=outputs,
                          dynamic_axes={"pixels": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                          opset_version=opset, dynamo=False)
    model = onnx.load(str(tmp))
    head = critic._head()
    meta = {
        "format": "photocritic-onnx",
        "version": "1",
        "model": critic.name or "",
        "method": head.name or "",
        "encoder": critic.encoder.id,
        "view": critic.view,
        "preprocess": json.dumps(asdict(pre), sort_keys=True),
        "outputs": json.dumps(outputs),
        "binary_rule": "score > 5",
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=META_PREFIX + k, value=v)
    model.doc_string = preprocess_doc(pre)
    model.producer_name = "photocritic"
    onnx.save(model, str(tmp))
    tmp.replace(output)
    return meta


class OnnxCritic:
    """A scorer backed by an exported ONNX file (onnxruntime). It has the
    parts of :class:`~photocritic.models.Critic` the scoring pipeline uses,
    so files, folders, the cache and bad files behave as for any model. Its
    "embedding" of an image is the graph's outputs (score, distribution),
    cached under a key that includes the file's digest."""

    reads_tokens = False
    encoder_spec = {"type": "onnx"}
    prompts = None

    def __init__(self, path: str | Path, device: str = "cpu"):
        from .encoders.base import Preprocess

        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a dependency
            raise UsageError("scoring an .onnx model needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            self.digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
            raise ModelFormatError(f"{self.path}: not a loadable ONNX model ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get(META_PREFIX + "format") != "photocritic-onnx":
            raise ModelFormatError(f"{self.path}: an ONNX file without photocritic's metadata (export it "
                                   f"with `photocritic export --format onnx`)")
        self.meta = {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
        self.preprocess = Preprocess(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in json.loads(self.meta["preprocess"]).items()})
        self.outputs = json.loads(self.meta["outputs"])
        self.name = self.path.name
        self.device = "cpu"
        self.precision = "fp32"
        self.head = None

    def configure(self, device=None, precision=None) -> "OnnxCritic":
        return self

    def encoder_key(self) -> str:
        return f"onnx:{self.digest}|{self.preprocess.key()}|fp32"

    @property
    def extra_columns(self) -> tuple[str, ...]:
        return ("distribution",) if "distribution" in self.outputs else ()

    def warm_text(self, cache) -> None:
        pass

    def embed(self, pixels_uint8: torch.Tensor) -> np.ndarray:
        """uint8 NHWC batch -> (N, 1 [+ 10]): the score [and distribution]."""
        x = np.ascontiguousarray(np.asarray(pixels_uint8, dtype=np.uint8))
        got = self.session.run(self.outputs, {"pixels": x})
        return np.concatenate([np.asarray(g, np.float32).reshape(len(x), -1) for g in got], axis=1)

    def outputs_from_embeddings(self, emb: np.ndarray) -> dict:
        score = emb[:, 0].astype(np.float64)
        out = {"score": score, "binary": (score > 5.0).astype(np.int64)}
        if emb.shape[1] > 1:
            out["distribution"] = emb[:, 1:11]
        return out

    def score(self, inputs, batch_size: int = 32, cache=None, workers=None, progress: bool = False,
              decode: str = "auto", max_bytes: int | None = None, comments=None, **_):
        from .data.images import DEFAULT_MAX_BYTES
        from .features import EmbeddingCache
        from .models import ScoreRows
        from .pipeline import score_inputs

        if comments is not None:
            raise UsageError(f"model {self.name} reads no comments; drop --comments")
        if isinstance(inputs, (str, Path)) or not hasattr(inputs, "__iter__"):
            inputs = [inputs]
        own = isinstance(cache, (str, Path))
        if own:
            cache = EmbeddingCache(cache)
        try:
            rows, stats = score_inputs(self, inputs, batch_size=batch_size, cache=cache, workers=workers,
                                       progress=progress, decode=decode,
                                       max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        finally:
            if own:
                cache.close()
        return ScoreRows(rows, stats)
