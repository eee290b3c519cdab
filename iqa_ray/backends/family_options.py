"""Options a run may set for a native model family of the transformers backend (``model.options``).

One pydantic model per checkpoint ``model_type``; defaults reproduce the checkpoint's reference
code. They change what the model is fed, so the run fingerprint includes them
(:func:`result_options`). Pure pydantic: validated on the driver without torch or a model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from iqa_ray.errors import ConfigError
from iqa_ray.settings import StrictModel


class MplugOwl3Options(StrictModel):
    """How the mPLUG-Owl3 processor builds a prompt (defaults: the checkpoint's processor)."""

    pair_cut_shapes: Literal["reference", "per_image"] = Field(
        "reference",
        description="`reference`: the k-th <|image|> takes the k-th of the two cut shapes the "
        "image processor returns per image, so a second image gets the (1, 1) cut prompt and "
        "the hyper attention never sees its global view (the checkpoint's quirk, what Q-Debias "
        "ran); `per_image`: every image gets its own grid (our fix, not the reference).",
    )
    drop_last_assistant_content: bool = Field(
        True,
        description="true: a pre-filled answer (Prompt.answer_prefix) is dropped, as the "
        "reference processor does in inference mode, and the words are read at the start of "
        "the assistant turn; false: it is kept in the prompt (not the reference).",
    )


# model_type -> the options its native family takes (families absent here take none).
FAMILY_OPTIONS: dict[str, type[StrictModel]] = {"mplugowl3": MplugOwl3Options}


def check_options(options: dict[str, Any]) -> None:
    """Config time, family not yet known: every key must belong to some family's options and
    its value must validate there.

    Raises:
        ValueError: an unknown key or a bad value (pydantic reports it under ``model.options``).
    """
    unknown = set(options)
    for name, model in FAMILY_OPTIONS.items():
        mine = {k: v for k, v in options.items() if k in model.model_fields}
        unknown -= set(mine)
        try:
            model.model_validate(mine)
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{name} option {problems}") from None
    if unknown:
        known = {name: sorted(model.model_fields) for name, model in FAMILY_OPTIONS.items()}
        raise ValueError(
            f"unknown transformers option(s) {sorted(unknown)}; options by model_type: {known}"
        )


def result_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options that change results: validated, values equal to the default left out (so a
    default written out gives the same fingerprint as none)."""
    out: dict[str, Any] = {}
    for model in FAMILY_OPTIONS.values():
        mine = {k: v for k, v in options.items() if k in model.model_fields}
        values = model.model_validate(mine).model_dump(mode="json", exclude_defaults=True)
        out.update(values)
    return dict(sorted(out.items()))


def options_for(model_type: str, options: dict[str, Any]) -> StrictModel | None:
    """Load time: the options of this checkpoint's family, validated strictly.

    Returns:
        The family's options model (defaults filled in), or None for a family that takes none
        when none are given.

    Raises:
        ConfigError: options given for a family that takes none, or keys of another family.
    """
    model = FAMILY_OPTIONS.get(model_type)
    if model is None:
        if options:
            raise ConfigError(
                f"model.options {sorted(options)} do not apply to model_type {model_type!r} "
                f"(transformers options exist for: {sorted(FAMILY_OPTIONS)})"
            )
        return None
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"model.options for {model_type}: {problems}") from None
