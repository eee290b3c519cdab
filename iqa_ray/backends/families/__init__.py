"""Native model families (re-implementations of remote-code checkpoints on transformers 5).

Kept light on purpose: only a name -> module-path table; a family module is imported lazily
by whoever needs it (it pulls in torch and transformers).
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {"mplugowl3": "iqa_ray.backends.families.mplug_owl3"}
