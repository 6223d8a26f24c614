"""photocritic: judge the aesthetics of images with vision-language models."""

__version__ = "0.1.0"

from .zoo import PRESETS, load  # noqa: E402

__all__ = ["load", "PRESETS", "__version__"]
