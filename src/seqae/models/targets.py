"""Modules named by ``_target_``: every encoder, decoder and objective, seqae's own or a researcher's
in their package, is built here from its config.

A run stores each such module as its ``_target_`` and keyword arguments (plain values) in its
checkpoint's hyper-parameters, so ``seqae.load``, ``seqae-encode`` and ``seqae-evaluate`` rebuild
the same class in a new process where that package is importable. The class is checked to be an
``nn.Module`` before anything of it is called: a checkpoint cannot make seqae call an arbitrary
function.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from seqae.errors import ConfigError


def build(spec: dict[str, Any], role: str, **given: Any) -> nn.Module:
    """``spec["_target_"](**given, **the rest of spec)``, once the target is known to be an
    ``nn.Module`` subclass. ``role`` names the config key in messages (``encoder``, ...)."""
    cls, target = resolve(spec, role), spec["_target_"]
    kwargs = {k: v for k, v in spec.items() if not k.startswith("_")}
    try:
        return cls(**given, **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"{role}: {target}({', '.join([*given, *kwargs])}) failed: {e}. seqae passes "
            f"{', '.join(given)}; the other keyword arguments come from the {role} config."
        ) from None


def resolve(spec: dict[str, Any], role: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass ``spec["_target_"]`` names, imported but not built."""
    target = spec.get("_target_")
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{role}._target_ must name a class as 'package.module.Class', got {target!r}.")
    module_name, _, class_name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"{role}._target_={target!r}: the module {e.name!r} cannot be imported. Install the package "
            f"that defines {class_name} in this environment (pip install -e <your package>), or put its "
            f"folder on PYTHONPATH; a run trained with it is reloaded the same way."
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(
            f"{role}._target_={target!r}: the module has no {class_name}; its classes are named in "
            f"{module.__file__}."
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"{role}._target_={target!r} is not a torch.nn.Module subclass ({type(cls).__name__}); "
            f"seqae builds only modules from a config or a checkpoint."
        )
    return cls
