"""Native model families (architectures whose published remote code no longer runs).

Light on purpose: only a name -> module-path table; each family is imported lazily by whoever
uses it, so importing this package pulls in neither torch nor transformers.
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {"mplug_owl2": "iqa_ray.backends.families.mplug_owl2"}
