"""The mPLUG-Owl2 conversation a ``Prompt`` is rendered into (pure string work, no model).

``USER: <user turn>{sep}ASSISTANT:`` followed by `` <answer prefix>`` when there is one, with
``<|image|>`` where each image goes. This is Q-Align's ``conv_templates["mplug_owl2"]`` (roles
USER / ASSISTANT, no system text, separator " "), which Q-Align, Compare2Score and DeQA-Score
share. ``sep`` is that separator unless the user turn already ends in whitespace: the reference
scorers end their turn with ``"\\n"`` and write ``"\\nASSISTANT:"``
(``USER: How would you rate the quality of this image?\\n<|image|>\\nASSISTANT: ...``).

The user turn is the prompt's ``layout`` with ``<|image|>`` at each ``{image}`` marker. Without a
layout (``Prompt.layout`` None) it is every image's ``<|image|>``, then the question with no
separator, as the reference's own evaluation scripts and mPLUG-Owl2's CLI build it
(``DEFAULT_IMAGE_TOKEN + inp`` once per image).
"""

from __future__ import annotations

from iqa_ray.backends.families.mplug_owl2.configuration import IMAGE_TOKEN
from iqa_ray.backends.prompt import Prompt

ROLES = ("USER", "ASSISTANT")
SEPARATOR = " "  # conv_templates["mplug_owl2"].sep


def user_turn(prompt: Prompt) -> str:
    """The user turn's text with one ``<|image|>`` per image, in order.

    Raises:
        ValueError: the question or layout text contains ``<|image|>`` itself (it would be
            read as an image slot).
    """
    texts = [part for part in prompt.user_parts() if isinstance(part, str)]
    if any(IMAGE_TOKEN in text for text in texts):
        raise ValueError(f"prompt text may not contain {IMAGE_TOKEN!r}; use {{image}} markers")
    return "".join(IMAGE_TOKEN if isinstance(part, int) else part for part in prompt.user_parts())


def render(prompt: Prompt) -> str:
    """The whole prompt text, ending with the pre-filled answer prefix (or ``ASSISTANT:``)."""
    turn = user_turn(prompt)
    sep = "" if turn.endswith((" ", "\n")) else SEPARATOR
    text = f"{ROLES[0]}: {turn}{sep}{ROLES[1]}:"
    return f"{text} {prompt.answer_prefix}" if prompt.answer_prefix else text
