"""Per-family prompt conventions: where a checkpoint family's reference prompt puts the images and
the question, as data (a table keyed by method and model family), never as branches in a method.

A layout is the whole user turn with one ``{image}`` marker per image and one ``{question}``
marker, filled with the method's question before it becomes a ``Prompt.layout``. Only the
placement is family data: the published questions and answer prefixes of these references are
the methods' defaults already (checked against the fixture's token ids by the tests).
"""

from __future__ import annotations

from iqa_ray.backends.prompt import IMAGE_MARKER

QUESTION_MARKER = "{question}"
IMAGES_FIRST = "images_first"  # layout param: the backend's own placement, ignoring the table

# (method, model family) -> user-turn layout of that family's reference prompt.
FAMILY_LAYOUTS: dict[tuple[str, str], str] = {
    # Q-Align's QAlignScorer (q_align/evaluate/scorer.py; DeQA-Score's scorer is the same):
    # "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: ..."
    ("qalign_levels", "mplug_owl2"): "{question}\n{image}\n",
    # Compare2Score's scorer.py and model score():
    # "USER: <|image|> <|image|> <question> \nASSISTANT: ..."
    ("compare2score", "mplug_owl2"): "{image} {image} {question} \n",
}


def check_layout(layout: str | None, n_images: int) -> str | None:
    """Validate a ``layout`` method param: None, :data:`IMAGES_FIRST`, or a template with
    ``n_images`` ``{image}`` markers and one ``{question}`` marker.

    Raises:
        ValueError: the template has the wrong number of markers.
    """
    if layout is None or layout == IMAGES_FIRST:
        return layout
    images, questions = layout.count(IMAGE_MARKER), layout.count(QUESTION_MARKER)
    if images != n_images or questions != 1:
        raise ValueError(
            f"layout {layout!r} needs {n_images} {IMAGE_MARKER} marker(s) and one "
            f"{QUESTION_MARKER} marker; it has {images} and {questions} "
            f"(or use {IMAGES_FIRST!r} for the backend's own placement)"
        )
    return layout


def resolve_layout(method: str, family: str, layout: str | None, question: str) -> str | None:
    """The ``Prompt.layout`` for a method on a model family.

    Args:
        method: the registered method name (the table's first key).
        family: the backend's ``family`` (the checkpoint's ``model_type``).
        layout: the method's ``layout`` param: None follows the family's convention (or the
            backend's placement when the table has none); :data:`IMAGES_FIRST` always the
            backend's placement; a template wins over the table.
        question: the method's question, put at ``{question}``; an explicit question on a
            family with a convention keeps the family's placement of images around it.

    Returns:
        The filled layout, or None for the backend's placement (images, then the question).

    Raises:
        ValueError: the question itself contains a marker.
    """
    if layout == IMAGES_FIRST:
        return None
    template = layout if layout is not None else FAMILY_LAYOUTS.get((method, family))
    if template is None:
        return None
    if IMAGE_MARKER in question or QUESTION_MARKER in question:
        raise ValueError(f"question {question!r} may not contain {IMAGE_MARKER} or "
                         f"{QUESTION_MARKER}")
    return template.replace(QUESTION_MARKER, question)
