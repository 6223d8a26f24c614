"""Randomly initialised CLIP / SigLIP models saved to a directory.

They load through exactly the same hub code path as real checkpoints
(:class:`~photocritic.encoders.hf.HFVisionLanguageEncoder`), which is how the
tests and benchmarks exercise that path on machines with no model hub.
The tokenizer is a character-level CLIP BPE vocabulary (every byte, no
merges), built here so nothing has to be downloaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

# name -> (vision width, layers, heads, patch, image size, text width, text layers, projection)
SIZES = {
    "tiny": (32, 2, 2, 16, 64, 32, 2, 32),
    "vit-b-32": (768, 12, 12, 32, 224, 512, 12, 512),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def write_char_tokenizer(directory: Path, model_max_length: int = 77) -> None:
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab[s] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                        model_max_length=model_max_length)
    tok.save_pretrained(str(directory))


def save_random_clip(directory: str | Path, size: str = "tiny", kind: str = "clip",
                     seed: int = 0, logit_scale: float | None = None) -> Path:
    """Save a random-weight ``kind`` ("clip" or "siglip") model of ``size``
    (see :data:`SIZES`) with tokenizer and preprocessor config.
    ``logit_scale`` sets ``logit_scale.exp()`` (trained CLIPs have 100)."""
    from transformers import (CLIPConfig, CLIPModel, SiglipConfig, SiglipModel)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vw, vl, vh, patch, img, tw, tl, proj = SIZES[size]
    n_vocab = 2 * 256 + 2
    max_len = 77 if kind == "clip" else 16
    vision = dict(hidden_size=vw, num_hidden_layers=vl, num_attention_heads=vh,
                  intermediate_size=4 * vw, patch_size=patch, image_size=img)
    text = dict(hidden_size=tw, num_hidden_layers=tl, num_attention_heads=max(1, tw // 64) if tw >= 64 else 2,
                intermediate_size=4 * tw, vocab_size=max(n_vocab, 49408 if size != "tiny" else n_vocab),
                max_position_embeddings=max_len)
    torch.manual_seed(seed)
    if kind == "clip":
        text.update(bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1, pad_token_id=n_vocab - 1)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)
        model = CLIPModel(config)
        proc = {"do_resize": True, "size": {"shortest_edge": img}, "resample": 3,
                "do_center_crop": True, "crop_size": {"height": img, "width": img},
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "CLIPImageProcessor"}
    elif kind == "siglip":
        text.update(pad_token_id=n_vocab - 1, eos_token_id=n_vocab - 1, bos_token_id=n_vocab - 2)
        vision["hidden_size"] = text["hidden_size"] = proj  # SigLIP towers share a width
        vision["intermediate_size"] = text["intermediate_size"] = 4 * proj
        config = SiglipConfig(text_config=text, vision_config=vision)
        model = SiglipModel(config)
        proc = {"do_resize": True, "size": {"height": img, "width": img}, "resample": 2,
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "image_processor_type": "SiglipImageProcessor"}
    else:
        raise ValueError(f"kind must be 'clip' or 'siglip', not {kind!r}")
    if logit_scale is not None:
        model.logit_scale.data.fill_(math.log(logit_scale))
    model.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(json.dumps(proc, indent=2))
    write_char_tokenizer(directory, max_len)
    return directory
