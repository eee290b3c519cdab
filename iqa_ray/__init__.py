"""iqa_ray: perceptual image-quality scoring with large multimodal models.

At corpus scale, on Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iqa_ray._version import __version__

if TYPE_CHECKING:
    from iqa_ray.api.score import score
    from iqa_ray.scoring.config import RunConfig
    from iqa_ray.scoring.pipeline import run

__all__ = ["RunConfig", "__version__", "list_distortions", "list_methods", "run", "score"]


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing iqa_ray stays cheap and free of side effects.
    if name == "RunConfig":
        from iqa_ray.scoring.config import RunConfig

        return RunConfig
    if name == "score":
        from iqa_ray.api.score import score

        return score
    if name == "run":
        from iqa_ray.scoring.pipeline import run

        return run
    if name == "list_methods":
        from iqa_ray.methods import list_methods

        return list_methods
    if name == "list_distortions":
        from iqa_ray.distortions import list_distortions

        return list_distortions
    raise AttributeError(name)
