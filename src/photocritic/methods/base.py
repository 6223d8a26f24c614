"""The one shape of every trainable method (scikit-learn's estimator API).

* the constructor only stores keyword hyper-parameters (``get_params``
  reads them back from its signature);
* ``requires``: the feature views the method reads (``image.pooled``,
  ``image.prelogits``, ``image.tokens``, ``text.pooled``, ...);
  ``texts()``: the texts whose ``text.pooled`` embeddings it needs (a VILA-R
  anchor); extraction produces them, the method never calls an encoder;
* ``fit(features, targets, val=None, on_epoch=None)`` learns and returns self;
* ``predict(features) -> Prediction``: a raw score per image and, for
  distribution methods, the 10-bin distribution;
* ``state_dict()`` / ``load_state(state, meta)``: tensors for
  ``model.safetensors`` plus the JSON-able facts needed to rebuild the
  modules (shapes), kept in ``config.json``.

``features`` is a dict view name -> array (N, ...); ``targets`` a
:class:`Targets`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Prediction:
    #: the method's raw output per image (the model's score map sends it to 1-10)
    score: np.ndarray
    #: (N, 10) score distributions, for methods that predict one
    distribution: np.ndarray | None = None
    #: (N, A) per-attribute scores (1-10), for methods that predict them
    attributes: np.ndarray | None = None


@dataclass
class Targets:
    mean: np.ndarray
    distribution: np.ndarray | None = None
    #: (N, A) per-attribute scores, NaN where an image has none (``--attribute-labels``)
    attributes: np.ndarray | None = None
    attribute_names: tuple = ()

    def __len__(self) -> int:
        return len(self.mean)

    def subset(self, idx) -> "Targets":
        return Targets(self.mean[idx], None if self.distribution is None else self.distribution[idx],
                       None if self.attributes is None else self.attributes[idx], self.attribute_names)


class Method:
    name = ""  # set by registry.register_method
    requires: tuple[str, ...] = ("image.pooled",)
    has_distribution = False
    #: True for methods whose predictions carry per-attribute scores
    has_attributes = False
    #: True for methods that train the image tower (fed images, not features)
    trains_backbone = False
    #: the validation metric early stopping watches, and whether lower is better
    monitor = ("srcc", False)
    #: fewest labelled training images fit() accepts
    min_train = 3
    #: the command that trains it, when ``photocritic train`` does not (a pretrained model's scorer)
    trained_by: str | None = None

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.param_names()}

    def texts(self) -> list[str]:
        return []

    @property
    def image_view(self) -> str:
        return next(v for v in self.requires if v.startswith("image."))

    def fit(self, features: dict, targets: Targets, val=None, on_epoch=None) -> "Method":
        raise NotImplementedError

    def predict(self, features: dict) -> Prediction:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    #: why ``export_module`` refuses (``photocritic export`` prints it)
    not_exportable = "its prediction is not written as one torch module"

    def export_module(self, features: dict) -> torch.nn.Module:
        """A torch module from this method's image view (N, ...) to its raw
        score (N,), or to ``(raw score, distribution (N, 10))`` for
        distribution methods, for ``photocritic export``. ``features`` holds
        the method's non-image inputs (``text.pooled``, ``logit_scale``)."""
        from ..errors import UsageError

        raise UsageError(f"method {self.name} cannot be exported to ONNX: {self.not_exportable}")

    def meta(self) -> dict:
        """JSON-able facts (shapes) that ``load_state`` needs besides the params."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor], meta: dict) -> "Method":
        raise NotImplementedError

    def check_targets(self, targets: Targets) -> None:
        from ..errors import DataError

        if self.has_distribution and targets.distribution is None:
            raise DataError(f"method {self.name} learns score distributions; the labels have only "
                            f"mean scores (give score1..score10 or AVA vote counts)")


def as_tensor(x) -> torch.Tensor:
    """float32 tensor; a float32 array (a memory-mapped feature file too) is
    shared, not copied."""
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


CHUNK = 16384


def column_stats(x, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (population; constant columns
    get 1) in float64, read ``chunk`` rows at a time, so a memory-mapped
    feature file is never copied whole."""
    n = len(x)
    total = np.zeros(x.shape[1:], np.float64)
    for s in range(0, n, chunk):
        total += np.asarray(x[s:s + chunk], np.float64).sum(0)
    mean = total / n
    sq = np.zeros_like(mean)
    for s in range(0, n, chunk):
        sq += ((np.asarray(x[s:s + chunk], np.float64) - mean) ** 2).sum(0)
    std = np.sqrt(sq / n)
    return mean, np.where(std > 0, std, 1.0)


class TorchHead(Method):
    """A method whose learnt part is one ``nn.Module`` built by ``build(meta)``
    from JSON-able facts (input width ...), trained on frozen features with
    :func:`photocritic.training.loop.fit_head`."""

    module: torch.nn.Module | None = None

    def __init__(self, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, patience: int = 10, seed: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed

    def build(self, meta: dict) -> torch.nn.Module:
        raise NotImplementedError

    def meta(self) -> dict:
        return dict(self._meta)

    def state_dict(self):
        return {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}

    def load_state(self, state, meta):
        self._meta = dict(meta)
        self.module = self.build(self._meta)
        self.module.load_state_dict({k: v.float() for k, v in state.items()})
        self.module.eval()
        return self

    def _predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def forward_batches(self, x: np.ndarray, batch: int = 65536) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([self._predict_tensor(as_tensor(x[s:s + batch]))
                              for s in range(0, len(x), batch)]) if len(x) else torch.zeros(0)
