"""The encoder of a multi-attribute pretrained model (``pretrain
multiattr``): its image tower (any backbone) followed by the adapters, fusion
and projection heads of :class:`~photocritic.methods.multiattr.MultiAttrNet`.

Views: ``image.pooled`` and ``image.prelogits`` are the pretrained image
representation f; ``image.tokens`` the adapted tower tokens (the tower's own
where it has none); ``image.attributes`` the per-attribute space embeddings
(N, K d), L2-normalised per space.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .base import EncoderOutput, ModelNotAvailableError

MULTIATTR_FORMAT = "photocritic-multiattr"
CONFIG = "config.json"


def is_multiattr_dir(path: str | Path) -> bool:
    f = Path(path) / CONFIG
    try:
        return f.is_file() and json.loads(f.read_text()).get("format") == MULTIATTR_FORMAT
    except (OSError, ValueError):
        return False


def read_multiattr_config(directory: str | Path) -> dict:
    directory = Path(directory)
    if not is_multiattr_dir(directory):
        raise ModelNotAvailableError(f"{directory}: not a multi-attribute model folder (no {CONFIG} "
                                     f"with format {MULTIATTR_FORMAT})")
    return json.loads((directory / CONFIG).read_text())


def load_net(directory: str | Path):
    from safetensors.torch import load_file

    from ..methods.multiattr import MultiAttrNet

    from ..errors import ModelFormatError

    config = read_multiattr_config(directory)
    try:
        net = MultiAttrNet(config["net"])
        net.load_state_dict(load_file(str(Path(directory) / "net.safetensors")))
    except (KeyError, RuntimeError, OSError) as exc:
        raise ModelFormatError(f"{directory}: the multi-attribute net does not load ({str(exc).splitlines()[0]}); "
                               f"was it written by another photocritic version? Pretrain it again") from None
    return net.eval(), config


def tower_spec(directory: str | Path, config: dict) -> dict:
    """The tower's encoder spec, with the trained tower's weights where there are some."""
    spec = dict(config["tower"])
    if config.get("tower_weights"):
        spec["weights"] = str(Path(directory) / config["tower_weights"])
    return spec


def multiattr_identity(directory: str | Path):
    """(id, preprocess) without loading any weights: the net's file digest
    and the tower's identity."""
    from ..models import encoder_identity
    from .base import tuned_suffix

    config = read_multiattr_config(directory)
    tower_id, pre = encoder_identity(tower_spec(directory, config))
    return f"multiattr{tuned_suffix(str(Path(directory) / 'net.safetensors'))}|{tower_id}", pre


class DescriptionBank:
    """The training descriptions of each space, embedded in it."""

    def __init__(self, directory: str | Path):
        from safetensors.torch import load_file

        directory = Path(directory)
        data = load_file(str(directory / "bank.safetensors"))
        self.vectors = data["vectors"].float()
        self.space = data["space"]
        self.texts = json.loads((directory / "bank.json").read_text())["texts"]

    def nearest(self, e: torch.Tensor, space: int) -> tuple[list[str], list[float]]:
        """The best-matching description in ``space`` for each row of ``e``
        (N, d), and its cosine similarity."""
        rows = (self.space == space).nonzero().flatten()
        if len(rows) == 0:
            return [""] * len(e), [float("nan")] * len(e)
        sims = e.float() @ self.vectors[rows].t()
        best = sims.argmax(dim=1)
        return [self.texts[int(rows[b])] for b in best], sims.gather(1, best[:, None]).flatten().tolist()


class MultiAttrEncoder:
    """Inference wrapper: tower -> net (capability ``attribute_spaces``)."""

    capabilities = frozenset({"attribute_spaces"})

    def __init__(self, directory: str | Path, device: str = "cpu", tuned: str | None = None):
        from ..models import build_encoder

        if tuned:
            raise ModelNotAvailableError(f"{directory}: a multi-attribute model's tower is not fine-tuned "
                                         f"separately (no backbone weights expected)")
        self.name = str(directory)
        self.net, self.config = load_net(directory)
        self.tower = build_encoder(tower_spec(directory, self.config), device)
        self.tower_view = self.config.get("tower_view", "image.pooled")
        self.id, self.preprocess = multiattr_identity(directory)
        self.dim = int(self.net.config["dim"])
        self.attributes = list(self.config["attributes"])
        self.spaces = list(self.net.spaces)
        self.model = nn.ModuleDict({"tower": self.tower.model, "net": self.net})
        self._device = torch.device(device)
        self.model.to(self._device)
        self._bank = self._zero_shot = None

    @property
    def device(self):
        return self._device

    @device.setter
    def device(self, value):
        self._device = torch.device(value)
        self.tower.device = self._device

    def to(self, device):
        self.device = device
        self.model.to(self.device)
        return self

    @property
    def bank(self) -> DescriptionBank:
        if self._bank is None:
            self._bank = DescriptionBank(self.name)
        return self._bank

    def zero_shot_attributes(self, spaces: torch.Tensor):
        """(N, A) zero-shot attribute scores (1-10) from the space embeddings
        (N, K, d), with the good/bad prompts embedded at pretraining
        (``prompts.safetensors``; :class:`~photocritic.methods.multiattr.AttributeZeroShot`'s rule)."""
        from safetensors.torch import load_file

        from ..methods.multiattr import AttributeZeroShot

        if self._zero_shot is None:
            state = load_file(str(Path(self.name) / "prompts.safetensors"))
            self._zero_shot = AttributeZeroShot(attributes=tuple(self.attributes), spaces=tuple(self.spaces))
            self._zero_shot.load_state(state, {})
        return self._zero_shot.attribute_scores({"image.attributes": spaces.float().flatten(1).cpu().numpy()})

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> EncoderOutput:
        out = self.tower.encode(pixels)
        tokens = out.tokens if self.net.config.get("token_dim") else None
        p = out.extras["prelogits"] if self.tower_view == "image.prelogits" else out.pooled
        self.net.float()  # small: always fp32, whatever precision the tower runs in
        f, e = self.net.image(p.float(), None if tokens is None else tokens.float())
        adapted = self.net.token_adapter(tokens.float()) if tokens is not None else out.tokens
        return EncoderOutput(pooled=f.float(), tokens=adapted,
                             extras={"prelogits": f.float(), "attributes": e.float().flatten(1),
                                     "spaces": e.float()})
