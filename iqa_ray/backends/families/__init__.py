"""Native model families: re-implementations, on transformers 5 building blocks, of published
checkpoints whose remote code no longer runs (mPLUG-Owl2 for Q-Align, Compare2Score and
DeQA-Score; mPLUG-Owl3 for Q-Debias). Never executes remote code; ``auto_map`` is ignored.

Light on purpose: only a ``model_type`` -> module-path table; a family module is imported
lazily by whoever needs it (it pulls in torch and transformers).
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "mplug_owl2": "iqa_ray.backends.families.mplug_owl2",
    "mplugowl3": "iqa_ray.backends.families.mplug_owl3",
}
