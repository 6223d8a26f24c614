"""Name -> class tables for methods (and the encoders' backbones in
:mod:`photocritic.encoders.backbones`). Presets and config files name
entries here; nothing branches on types.

A method module registers its class with :func:`register_method` when it is
imported; :func:`method_class` imports the module that holds a name on first
lookup, so that ``import photocritic`` stays light.
"""

from __future__ import annotations

import importlib

METHODS: dict[str, type] = {}

#: where each registered name lives (imported on first lookup)
METHOD_MODULES = {
    "linear": "photocritic.methods.linear",
    "nima": "photocritic.methods.nima",
    "mlp": "photocritic.methods.mlp",
    "vila-r": "photocritic.methods.vila_r",
    "finetune": "photocritic.methods.finetune",
    "zeroshot": "photocritic.methods.zeroshot",
    "mmlq": "photocritic.methods.mmlq",
    "multiattr": "photocritic.methods.multiattr",
    "attributes": "photocritic.methods.multiattr",
}
#: names older model directories used
ALIASES = {"vila_r": "vila-r"}


def register_method(name: str):
    """Class decorator: ``METHODS[name] = cls``; a second class under one name is an error."""
    def deco(cls):
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].__name__}, {cls.__name__})")
        if METHOD_MODULES.get(name, cls.__module__) != cls.__module__:
            raise ValueError(f"method {name!r} is declared in {METHOD_MODULES[name]}, not {cls.__module__}")
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def method_class(name: str) -> type:
    from .errors import UsageError

    name = ALIASES.get(name, name)
    if name not in METHODS and name in METHOD_MODULES:
        importlib.import_module(METHOD_MODULES[name])
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r} (known: {', '.join(sorted(METHOD_MODULES))})")
    return METHODS[name]


def method_names() -> list[str]:
    return sorted(METHOD_MODULES)
