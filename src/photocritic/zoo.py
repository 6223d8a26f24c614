"""Named presets: name -> a model directory or an encoder + method recipe.

Presets are data (this table), not branches in code.
"""

from __future__ import annotations

import json
from pathlib import Path

from .models import Critic, is_model_dir
from .scoremap import ScoreMap

_PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"

PRESETS: dict[str, dict] = {
    "lite": {
        "dir": _PACKAGE_WEIGHTS / "lite",
        "summary": "EfficientNet-Lite0 + VILA-R rank head trained on self-supervised "
                   "degradation pairs; offline, fast; a technical-quality prior, not AVA-trained",
    },
}

#: Raw output of the untrained adapter is cos(image, "good image"); CLIP puts
#: image-text cosines around 0.2-0.3, so 0.2 maps to 5.5. Uncalibrated.
ZERO_SHOT_MAP = ScoreMap(center=0.2, scale=0.05)


def hf_zero_shot(name: str) -> Critic:
    """Any CLIP/SigLIP (hub id or directory) as an untrained VILA-R: the score
    is the cosine of the image with the text anchor "good image"."""
    return Critic({"type": "hf", "name": str(name)}, None, ZERO_SHOT_MAP, name=str(name),
                  description="untrained VILA-R adapter: cos(image, 'good image')",
                  anchor_text="good image")


def _is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("model_type") in ("clip", "siglip", "siglip2")
    except (ValueError, OSError):
        return False


def load(name_or_dir: str | Path = "lite", device: str = "cpu", precision: str = "fp32") -> Critic:
    """A preset name, a directory written by photocritic, a CLIP/SigLIP
    directory, or a Hugging Face hub id -> a :class:`~photocritic.models.Critic`."""
    name = str(name_or_dir)
    path = Path(name).expanduser()
    if name in PRESETS:
        critic = Critic.load(PRESETS[name]["dir"])
    elif path.is_dir() and is_model_dir(path):
        critic = Critic.load(path)
    elif path.is_dir() and _is_hf_dir(path):
        critic = hf_zero_shot(path)
    elif path.exists():
        raise ValueError(f"{name}: not a photocritic model directory (no config.json with "
                         f"format 'photocritic-model') and not a CLIP/SigLIP directory")
    elif "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
        critic = hf_zero_shot(name)
    else:
        raise ValueError(f"unknown model {name!r}: use a preset ({', '.join(PRESETS)}), "
                         f"a model directory, or a Hugging Face hub id like 'openai/clip-vit-base-patch32'")
    return critic.configure(device=device, precision=precision)
