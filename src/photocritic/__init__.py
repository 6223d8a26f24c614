"""photocritic: judge the aesthetics of images with vision-language models."""

__version__ = "0.1.0"

__all__ = ["load", "PRESETS", "__version__"]


def __getattr__(name):
    """``load`` and ``PRESETS`` on first use: importing a submodule (reading
    and decoding images, in a Ray task say) does not import torch."""
    if name in ("load", "PRESETS"):
        from . import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'photocritic' has no attribute {name!r}")
