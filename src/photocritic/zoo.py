"""Named presets: name -> a model directory or an encoder + method recipe.

Presets are data (this table), not branches in code.
"""

from __future__ import annotations

import json
from pathlib import Path

from .methods.zeroshot import PromptSet
from .models import Critic, is_model_dir
from .scoremap import ScoreMap

_PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"

PRESETS: dict[str, dict] = {
    "lite": {
        "dir": _PACKAGE_WEIGHTS / "lite",
        "summary": "EfficientNet-Lite0 + VILA-R rank head trained on the synthetic aesthetic "
                   "world (configs/lite.yaml); offline, fast; a technical-quality prior, not AVA-trained",
    },
    "laion-v2": {
        "dir": _PACKAGE_WEIGHTS / "laion-v2",
        "summary": "CLIP ViT-L/14 + the LAION improved aesthetic predictor head (ships in the package; "
                   "with --embeddings it needs no other weights)",
    },
    "clip-vit-b-32": {
        "hub": "openai/clip-vit-base-patch32", "prompts": "hentschel-fixed",
        "summary": "zero-shot CLIP ViT-B/32, weighted sum over 'a outstanding/horrible picture' "
                   "(Hentschel et al. 2022)",
    },
    "clip-iqa": {
        "hub": "openai/clip-vit-base-patch32", "prompts": "clipiqa",
        "summary": "zero-shot CLIP ViT-B/32, CLIP-IQA antonym softmax over 'Good photo.'/'Bad photo.'",
    },
    "clip-vit-l-14": {
        "hub": "openai/clip-vit-large-patch14", "prompts": "vila",
        "summary": "zero-shot CLIP ViT-L/14, antonym softmax averaged over VILA's six good/bad pairs",
    },
    "siglip-b-16": {
        "hub": "google/siglip-base-patch16-224", "prompts": "vila",
        "summary": "zero-shot SigLIP B/16, antonym softmax averaged over VILA's six good/bad pairs",
    },
}

DEFAULT_ZERO_SHOT_PROMPTS = "vila"

#: Backbones ``photocritic train --backbone`` names (a hub id or a directory works too).
BACKBONES: dict[str, dict] = {
    "efficientnet-lite0": {"type": "efficientnet-lite0"},
    "clip-vit-b-32": {"type": "hf", "name": "openai/clip-vit-base-patch32"},
    "clip-vit-b-16": {"type": "hf", "name": "openai/clip-vit-base-patch16"},
    "clip-vit-l-14": {"type": "hf", "name": "openai/clip-vit-large-patch14"},
    "siglip-b-16": {"type": "hf", "name": "google/siglip-base-patch16-224"},
}


def _looks_like_hub_id(name: str) -> bool:
    """``owner/model``: one slash, not a relative or absolute path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def backbone_spec(name: str) -> dict:
    """A backbone preset, a CLIP/SigLIP directory or a hub id -> an encoder spec."""
    from .errors import UsageError

    if name in BACKBONES:
        return dict(BACKBONES[name])
    path = Path(name).expanduser()
    if path.is_dir():
        coca = _coca_of(path)
        if coca is not None:  # a VILA-P model directory (or its coca/ folder)
            return {"type": "coca", "name": str(coca)}
        multi = _multiattr_of(path)
        if multi is not None:  # a multi-attribute pretrained model (or its multiattr/ folder)
            return {"type": "multiattr", "name": str(multi)}
        if not _is_hf_dir(path):
            raise UsageError(f"--backbone {name}: not a CLIP/SigLIP directory (no config.json with "
                             f"model_type clip, siglip or siglip2), not a VILA-P model and not a "
                             f"multi-attribute pretrained model")
        return {"type": "hf", "name": str(path.resolve())}
    if path.exists():
        raise UsageError(f"--backbone {name}: a file; give a preset ({', '.join(BACKBONES)}), "
                         f"a model directory or a hub id")
    if _looks_like_hub_id(name):
        return {"type": "hf", "name": name}
    raise UsageError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)}, a CLIP/SigLIP "
                     f"directory, or a hub id like openai/clip-vit-base-patch32")


def encoder_class(spec: dict) -> type:
    """The encoder class of a spec (imports it; loads no weights)."""
    if spec["type"] == "efficientnet-lite0":
        from .encoders.efficientnet import EfficientNetLite0Encoder as cls
    elif spec["type"] == "coca":
        from .encoders.coca import CoCaEncoder as cls
    elif spec["type"] == "multiattr":
        from .encoders.multiattr import MultiAttrEncoder as cls
    else:
        from .encoders.hf import HFVisionLanguageEncoder as cls
    return cls


def encoder_capabilities(spec: dict) -> frozenset:
    return frozenset(encoder_class(spec).capabilities)


def backbone_views(spec: dict) -> set[str]:
    """The views a backbone provides, from its encoder class's declared
    capabilities (no weights are loaded)."""
    from .encoders.base import views_of

    return views_of(encoder_capabilities(spec))


def default_score_map(prompts: PromptSet) -> ScoreMap:
    """Documented, monotone maps of each rule's raw output to 1-10:

    * antonym (a probability p): score = 1 + 9 p;
    * weighted sum / context (a sum over P positive and P negative prompts):
      score = 1 + 9 sigmoid(raw / (0.02 P)), i.e. a mean cosine difference of
      +-0.02 (about the spread of CLIP's image-text cosines) maps to 7.6 / 3.4;
    * ensemble (one cosine difference): the same with P = 1.

    ``ScoreMap.calibrate`` fits a map to labelled data instead.
    """
    if prompts.rule == "antonym":
        return ScoreMap(center=1.0, scale=9.0, kind="linear")
    n_pos = 1 if prompts.rule == "ensemble" else sum(1 for w in prompts.expand()[1] if w > 0)
    return ScoreMap(center=0.0, scale=0.02 * n_pos)


def zero_shot(name_or_dir: str, prompts: str | PromptSet = DEFAULT_ZERO_SHOT_PROMPTS,
              label: str | None = None) -> Critic:
    """A CLIP/SigLIP (hub id or directory) scoring with a prompt set's rule."""
    ps = prompts if isinstance(prompts, PromptSet) else PromptSet.load(prompts)
    return Critic({"type": "hf", "name": str(name_or_dir)}, None, default_score_map(ps),
                  name=label or str(name_or_dir),
                  description=f"zero-shot, rule {ps.rule}, prompt set {ps.name}", prompts=ps)


def _inner_model(path: Path, kind: str, is_inner) -> Path | None:
    """The folder of a ``kind`` backbone (a VILA-P's ``coca/``, a
    multi-attribute model's ``multiattr/``) that a model directory names,
    or ``path`` itself when ``is_inner(path)``; else None."""
    if is_inner(path):
        return path.resolve()
    if is_model_dir(path):
        backbone = json.loads((path / "config.json").read_text()).get("backbone") or {}
        if backbone.get("type") == kind:
            return (path / backbone["name"]).resolve()
    return None


def _coca_of(path: Path) -> Path | None:
    """The CoCa folder of a VILA-P model directory (or the folder itself), else None."""
    from .encoders.coca import is_coca_dir

    return _inner_model(path, "coca", is_coca_dir)


def _multiattr_of(path: Path) -> Path | None:
    """The ``multiattr/`` folder of a multi-attribute pretrained model directory (or the folder itself)."""
    from .encoders.multiattr import is_multiattr_dir

    return _inner_model(path, "multiattr", is_multiattr_dir)


def _is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("model_type") in ("clip", "siglip", "siglip2")
    except (ValueError, OSError):
        return False


def load(name_or_dir: str | Path = "lite", device: str = "cpu", precision: str = "auto",
         prompts: str | PromptSet | None = None, weights: str | Path | None = None) -> Critic:
    """A preset name, a directory written by photocritic, a CLIP/SigLIP
    directory, or a Hugging Face hub id -> a :class:`~photocritic.models.Critic`.

    ``prompts`` (a shipped prompt set's name, a JSON file or a
    :class:`PromptSet`) overrides a zero-shot model's prompts; ``weights``
    points a zero-shot preset at a local directory of its weights.
    ``precision``: ``auto`` (bf16 where this hardware does bf16 natively,
    else fp32), ``fp32`` or ``bf16``.
    """
    name = str(name_or_dir)
    path = Path(name).expanduser()
    preset = PRESETS.get(name)
    if weights is not None and (preset is None or "hub" not in preset):
        raise ValueError("--weights only applies to the zero-shot presets "
                         f"({', '.join(k for k, v in PRESETS.items() if 'hub' in v)})")
    if weights is not None and not Path(weights).expanduser().is_dir():
        raise ValueError(f"--weights {weights}: no such directory"
                         + ("" if not Path(weights).exists() else " (it is a file; give the folder "
                            "holding config.json and the weights)"))
    if preset is not None and "dir" in preset:
        critic = Critic.load(preset["dir"])
    elif preset is not None:
        critic = zero_shot(weights or preset["hub"], prompts or preset["prompts"], label=name)
    elif path.suffix.lower() == ".onnx" and path.is_file():  # photocritic export --format onnx
        from .onnx_export import OnnxCritic

        if prompts is not None:
            raise ValueError(f"--prompts applies to zero-shot models; {name} is an exported ONNX scorer")
        return OnnxCritic(path, device=device)
    elif path.is_dir() and is_model_dir(path):
        critic = Critic.load(path)
    elif path.is_dir() and _is_hf_dir(path):
        critic = zero_shot(path, prompts or DEFAULT_ZERO_SHOT_PROMPTS)
    elif path.exists():
        raise ValueError(f"{name}: not a photocritic model directory (no config.json with "
                         f"format 'photocritic-model') and not a CLIP/SigLIP directory")
    elif _looks_like_hub_id(name):
        critic = zero_shot(name, prompts or DEFAULT_ZERO_SHOT_PROMPTS)
    else:
        raise ValueError(f"unknown model {name!r}: use a preset ({', '.join(PRESETS)}), "
                         f"a model directory, or a Hugging Face hub id like 'openai/clip-vit-base-patch32'")
    if prompts is not None and critic.prompts is None:
        raise ValueError(f"--prompts applies to zero-shot models; {name} is not one")
    if prompts is not None and is_model_dir(path):  # a saved zero-shot model, new prompts
        ps = prompts if isinstance(prompts, PromptSet) else PromptSet.load(prompts)
        critic.prompts, critic.score_map, critic.head = ps, default_score_map(ps), None
    return critic.configure(device=device, precision=precision)
