"""Model backends: the ``Prompt`` request, the ``VlmBackend`` protocol, the ``model:`` config
and ``load_backend``. Heavy libraries (torch, transformers, vLLM) are imported only when a
backend is constructed, so the driver plans a run without them."""

from __future__ import annotations

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt, VlmBackend
from iqa_ray.errors import ConfigError

__all__ = ["ModelConfig", "Prompt", "VlmBackend", "load_backend"]


def load_backend(cfg: ModelConfig) -> VlmBackend:
    """Construct the configured backend (heavy imports happen inside the constructor)."""
    if cfg.backend == "fake":
        from iqa_ray.backends.fake import FakeBackend

        return FakeBackend.from_options(cfg.options)
    if cfg.backend == "transformers":
        from iqa_ray.backends.transformers.backend import TransformersBackend

        return TransformersBackend(cfg)
    if cfg.backend == "vllm":
        from iqa_ray.backends.vllm_backend import VllmBackend

        return VllmBackend(cfg)
    raise ConfigError(f"unknown backend {cfg.backend!r}")
