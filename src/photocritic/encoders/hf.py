"""Hugging Face CLIP and SigLIP encoders, by hub id or local directory.

Weights are looked up offline first (a local directory, then the Hugging Face
cache). Only when neither has them, and ``HF_HUB_OFFLINE`` is not set, is the
hub asked; if that fails too, :class:`ModelNotAvailableError` names the model
and says how to get it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from torch import nn

from .base import EncoderOutput, ModelNotAvailableError, Preprocess, WrappedModel, fit_tower_keys, tuned_suffix

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "box"}
SUPPORTED = ("clip", "siglip", "siglip2")


def download_command(name: str) -> str:
    """The command that downloads ``name`` with the installed huggingface_hub:
    ``hf download`` (huggingface_hub >= 0.34), else ``huggingface-cli download``."""
    import importlib.util

    try:
        has_hf = importlib.util.find_spec("huggingface_hub.cli.hf") is not None
    except ImportError:
        has_hf = False
    return f"hf download {name}" if has_hf else f"huggingface-cli download {name}"


def _how_to_get(name: str) -> str:
    if Path(name).is_dir():
        return (f"Model directory '{name}' has no loadable weights (it needs config.json and "
                f"model.safetensors or pytorch_model.bin, as `save_pretrained` writes them).")
    return (f"Model '{name}' is not available offline. Download it once on a machine with "
            f"network access (`{download_command(name)}`, which fills the Hugging Face cache), "
            f"or save it with `save_pretrained` and pass the local directory instead of the "
            f"hub id (for a preset: --weights DIR).")


@functools.lru_cache(maxsize=4)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint ($HF_ENDPOINT or
    huggingface.co) opens within ``timeout`` seconds. Checked once per
    process, so an offline machine fails fast instead of retrying downloads."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_pretrained(loader, name: str, **kwargs):
    try:
        return loader(name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as first:
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("PHOTOCRITIC_OFFLINE")
        if Path(name).is_dir() or offline:
            raise ModelNotAvailableError(f"{_how_to_get(name)} ({type(first).__name__}: "
                                         f"{str(first).splitlines()[0][:200]})") from None
        if not hub_reachable():
            raise ModelNotAvailableError(f"{_how_to_get(name)} (the hub is not reachable from "
                                         f"this machine)") from None
    try:
        return loader(name, **kwargs)
    except Exception as exc:
        raise ModelNotAvailableError(f"{_how_to_get(name)} ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200]})") from None


def _fingerprint(name: str) -> str:
    """A short digest of a local model's config and weights, so that two
    different models saved at the same path never share cache entries."""
    path = Path(name)
    if not path.is_dir():
        return name
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in (".json",):
            h.update(f.name.encode() + f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(size - (1 << 20))
                    h.update(fh.read())
    return f"local:{path.name}:{h.hexdigest()[:16]}"


def _preprocess_from(name: str, config) -> Preprocess:
    model_type = config.model_type
    image_size = config.vision_config.image_size
    proc = None
    if Path(name).is_dir() and (Path(name) / "preprocessor_config.json").exists():
        proc = json.loads((Path(name) / "preprocessor_config.json").read_text())
    else:
        try:
            from huggingface_hub import hf_hub_download

            proc = json.loads(Path(hf_hub_download(name, "preprocessor_config.json",
                                                   local_files_only=True)).read_text())
        except Exception:
            proc = None
    if proc is None:
        if model_type.startswith("siglip"):
            return Preprocess(resize=image_size, crop=None, mode="squash", resample="bilinear",
                              mean=(0.5,) * 3, std=(0.5,) * 3)
        return Preprocess(resize=image_size, crop=image_size, resample="bicubic",
                          mean=_CLIP_MEAN, std=_CLIP_STD)
    size = proc.get("size", image_size)
    resample = _PIL_RESAMPLE.get(proc.get("resample", 3), "bicubic")
    mean = tuple(proc.get("image_mean", _CLIP_MEAN))
    std = tuple(proc.get("image_std", _CLIP_STD))
    if isinstance(size, dict) and "shortest_edge" in size:
        crop = proc.get("crop_size", size["shortest_edge"])
        crop = crop.get("height", crop.get("width")) if isinstance(crop, dict) else crop
        return Preprocess(resize=size["shortest_edge"],
                          crop=crop if proc.get("do_center_crop", True) else None,
                          resample=resample, mean=mean, std=std)
    side = size.get("height", image_size) if isinstance(size, dict) else int(size)
    return Preprocess(resize=side, crop=None, mode="squash", resample=resample, mean=mean, std=std)


def _tensor(out) -> torch.Tensor:
    """transformers 5 may return an output object where 4 returned a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


class HFVisionLanguageEncoder(WrappedModel):
    """CLIP / SigLIP image and text towers (capabilities: contrastive,
    text_tower, token_text).

    ``encode`` returns the projected image embedding (the one compared with
    text) as ``pooled`` and the vision tower's last hidden states as
    ``tokens``.
    """

    capabilities = frozenset({"contrastive", "text_tower", "token_text"})

    def __init__(self, name_or_dir: str, device: str = "cpu", tuned: str | None = None):
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.name = str(name_or_dir)
        config = _load_pretrained(AutoConfig.from_pretrained, self.name)
        if config.model_type not in SUPPORTED:
            raise ValueError(f"{self.name}: model type '{config.model_type}' is not a CLIP or "
                             f"SigLIP model (supported: {', '.join(SUPPORTED)})")
        self.model_type = config.model_type
        self.model = _load_pretrained(AutoModel.from_pretrained, self.name, config=config)
        self.model.eval()
        self.tokenizer = None
        self._tokenizer_loader = lambda: _load_pretrained(AutoTokenizer.from_pretrained, self.name)
        self.preprocess = _preprocess_from(self.name, config)
        self.id = f"hf:{_fingerprint(self.name)}"
        if tuned:  # a fine-tuned vision tower (photocritic train finetune)
            from safetensors.torch import load_file

            tower = self.model.vision_model
            tower.load_state_dict(fit_tower_keys(load_file(tuned), tower.state_dict()))
            self.id += tuned_suffix(tuned)
        self.prelogits_dim = int(config.vision_config.hidden_size)
        self.dim = int(getattr(config, "projection_dim", None) or config.vision_config.hidden_size)
        if self.model_type.startswith("siglip"):
            self.dim = config.vision_config.hidden_size
        self.device = torch.device(device)
        self.model.to(self.device)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> EncoderOutput:
        out = self.model.vision_model(pixel_values=pixels.to(self.device))
        pre = out.pooler_output
        pooled = self.model.visual_projection(pre) if hasattr(self.model, "visual_projection") else pre
        return EncoderOutput(pooled=pooled.float(), tokens=out.last_hidden_state,
                             extras={"prelogits": pre.float()})

    def tower(self) -> nn.Module:
        """The trainable vision tower: pixels -> the vision output before the
        projection (``image.prelogits``, 768-d for ViT-B/32), with gradients."""
        return HFVisionTower(self.model.vision_model)

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            self.tokenizer = self._tokenizer_loader()
        if self.model_type.startswith("siglip"):
            batch = self.tokenizer(texts, padding="max_length", truncation=True,
                                   max_length=self.model.config.text_config.max_position_embeddings,
                                   return_tensors="pt")
        else:
            batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        return _tensor(self.model.get_text_features(**batch)).float()


class HFVisionTower(nn.Module):
    def __init__(self, vision_model):
        super().__init__()
        self.vision = vision_model
        self.dim = int(vision_model.config.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=pixels).pooler_output

    def backbone_state(self) -> dict:
        return self.vision.state_dict()
