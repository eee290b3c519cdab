"""The method registry: name -> ``ScoringMethod`` class (with its metadata as class attributes),
with did-you-mean errors for unknown names."""

from __future__ import annotations

from collections.abc import Callable

from iqa_ray.errors import unknown_name
from iqa_ray.methods.base import ScoringMethod

METHODS: dict[str, type[ScoringMethod]] = {}


def register_method(name: str) -> Callable[[type[ScoringMethod]], type[ScoringMethod]]:
    """Class decorator adding a method to the registry under ``name``."""

    def wrap(cls: type[ScoringMethod]) -> type[ScoringMethod]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type[ScoringMethod]:
    """Look a method up by name; unknown names raise ConfigError with a suggestion."""
    if name in METHODS:
        return METHODS[name]
    raise unknown_name("method", name, METHODS)


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(METHODS)
