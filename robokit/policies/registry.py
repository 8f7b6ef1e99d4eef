"""The policy registry: ``--policy NAME`` everywhere resolves through :func:`get_policy_class`.

Adding a policy takes its module (a config dataclass and a :class:`~robokit.policies.base.Policy`
subclass decorated with :func:`register_policy`) and one line in ``BUILTIN_MODULES`` so that it is
found by name without being imported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from robokit.errors import ConfigError
from robokit.policies.base import Policy

P = TypeVar("P", bound=type[Policy])
_REGISTRY: dict[str, type[Policy]] = {}

# Modules that define the built-in policies; imported on first lookup so that importing the base
# class stays cheap and so that a policy registers itself just by being defined.
BUILTIN_MODULES = {
    "act": "robokit.policies.act.model",
    "cnnmlp": "robokit.policies.cnnmlp.model",
    "grp": "robokit.policies.goal.grp",
    "vima": "robokit.policies.goal.vima",
    "vla": "robokit.policies.goal.vla",
}


def register_policy(name: str) -> Callable[[P], P]:
    """Class decorator: make a policy available as ``--policy NAME``."""

    def deco(cls: P) -> P:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_policy_class(name: str) -> type[Policy]:
    """The policy class registered under ``name``; a clear error lists the known names."""
    if name not in _REGISTRY and name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown policy '{name}'; choose one of: {', '.join(available_policies())}")
    return _REGISTRY[name]


def available_policies() -> list[str]:
    return sorted(set(_REGISTRY) | set(BUILTIN_MODULES))
