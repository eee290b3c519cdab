"""Human-label tables (image key + MOS): parsing CSV/JSON/JSON Lines/Q-Bench text, and joining
labels to score rows by exact URI or by relative-path suffix.

Pure: functions take text, bytes or DataFrames; only ``read_labels_file`` opens a local path.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from iqa_ray.errors import ConfigError
from iqa_ray.schema import Col

logger = logging.getLogger(__name__)

KEY = "key"  # the image path exactly as the label file gives it
MOS = "mos"  # float64; NaN where the file has no value
LABEL_KEY = "label_key"  # on matched score rows: the label key the uri was matched to
MATCH = "match"  # on matched score rows: "exact" or "suffix"

# Accepted header names, in priority order; compared after lower-casing and turning spaces and
# hyphens into underscores ("Image name" -> image_name). KADID-10k's "dmos" is on a
# higher-is-better scale, so no column is ever negated here: the source name is kept in
# ``attrs["mos_column"]`` for the caller to judge.
KEY_ALIASES = (
    "key", "image", "img_path", "image_path", "path", "uri", "url", "filename", "file_name",
    "image_name", "img_name", "dist_img", "name",
)  # fmt: skip
MOS_ALIASES = ("mos", "gt_score", "mos_quality", "dmos", "score")

_EXAMPLES = 5  # how many offending values an error message lists


def read_labels(
    data: str | bytes | pd.DataFrame,
    *,
    key_column: str | None = None,
    mos_column: str | None = None,
    fmt: str = "auto",
) -> pd.DataFrame:
    """Parse a label table into columns ``key`` (str), ``mos`` (float) and every other field.

    Args:
        data: file contents (text or UTF-8 bytes, a BOM is ignored) or an already loaded table.
        key_column: header of the image-path column; default: the first of ``KEY_ALIASES``.
        mos_column: header of the score column; default: the first of ``MOS_ALIASES``.
        fmt: ``"csv"``, ``"json"`` (a list, JSON Lines, or objects written back to back as in
            Q-Bench's outputs) or ``"auto"`` (JSON when the text starts with ``{`` or ``[``).

    Returns:
        One row per label, in file order; ``attrs`` records the source column names.

    Raises:
        ConfigError: unparsable text, no matching column, missing or duplicate keys, or a
            non-numeric score.
    """
    if fmt not in ("auto", "csv", "json"):
        raise ConfigError(f"unknown label format {fmt!r}; use auto, csv or json")
    if isinstance(data, pd.DataFrame):
        return _normalise(data, key_column, mos_column)
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    except UnicodeDecodeError as err:
        raise ConfigError(f"label data is not UTF-8 text: {err}") from err
    if fmt == "json" or (fmt == "auto" and text.lstrip()[:1] in ("{", "[")):
        records = pd.DataFrame.from_records(parse_json_stream(text))
        return _normalise(records, key_column, mos_column)
    out = _normalise(_csv_table(text), key_column, mos_column)
    # CSV cells are read as text (keys keep leading zeros); wholly numeric extras become numbers.
    for column in out.columns[2:]:
        with contextlib.suppress(ValueError, TypeError):
            out[column] = pd.to_numeric(out[column])
    return out


def read_labels_file(
    path: str | Path,
    *,
    key_column: str | None = None,
    mos_column: str | None = None,
    fmt: str | None = None,
) -> pd.DataFrame:
    """:func:`read_labels` on a local file (plain ``open``; remote URIs belong to ``iqa_ray.io``).

    Without ``fmt``: ``.csv``/``.tsv`` mean CSV, ``.json``/``.jsonl`` JSON, others ``"auto"``.
    """
    if fmt is None:
        by_suffix = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
        fmt = by_suffix.get(Path(path).suffix.lower(), "auto")
    with open(path, "rb") as handle:
        data = handle.read()
    return read_labels(data, key_column=key_column, mos_column=mos_column, fmt=fmt)


def parse_json_stream(text: str) -> list[dict[str, Any]]:
    """Objects from a JSON list, JSON Lines, or JSON values written back to back with no separator.

    Raises:
        ConfigError: on invalid JSON (with the character offset) or a non-object item.
    """
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":  # JSON Lines and stray commas between values
            pos += 1
        if pos >= end:
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise ConfigError(f"invalid JSON in label data at offset {err.pos}: {err.msg}") from err
        items.extend(value if isinstance(value, list) else [value])
    bad = [type(item).__name__ for item in items if not isinstance(item, dict)]
    if bad:
        raise ConfigError(f"label JSON must hold objects; found {len(bad)} of type {bad[0]}")
    return items


def _csv_table(text: str) -> pd.DataFrame:
    header = text.lstrip().split("\n", 1)[0]
    # The header's most frequent candidate separator wins (comma when the header has none).
    sep = max((",", "\t", ";", "|"), key=header.count)
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"unparsable label CSV: {err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    return table.mask(table == "")  # empty cells are missing values


def _find_column(table: pd.DataFrame, explicit: str | None, aliases: Sequence[str]) -> str:
    if explicit is not None:
        if explicit not in table.columns:
            raise ConfigError(
                f"label column {explicit!r} not found; columns: {list(table.columns)}"
            )
        return explicit
    by_norm: dict[str, str] = {}
    for column in table.columns:
        by_norm.setdefault(str(column).strip().lower().replace(" ", "_").replace("-", "_"), column)
    for alias in aliases:
        if alias in by_norm:
            return by_norm[alias]
    raise ConfigError(
        f"no label column among {list(aliases)} (case-insensitive); columns: "
        f"{list(table.columns)}; pass the column name explicitly"
    )


def _normalise(table: pd.DataFrame, key_column: str | None, mos_column: str | None) -> pd.DataFrame:
    if table.empty:
        raise ConfigError("label data holds no rows")
    key_src = _find_column(table, key_column, KEY_ALIASES)
    mos_src = _find_column(table, mos_column, MOS_ALIASES)
    if key_src == mos_src:
        raise ConfigError(f"label column {key_src!r} cannot be both the key and the score")
    missing = table[key_src].isna() | (table[key_src].astype(str).str.strip() == "")
    if missing.any():
        raise ConfigError(f"{int(missing.sum())} label rows have no {key_src!r} value")
    keys = table[key_src].astype(str)
    dup = keys[keys.duplicated()].unique()
    if len(dup):
        raise ConfigError(f"{len(dup)} duplicate label keys, e.g. {list(dup[:_EXAMPLES])}")
    mos = pd.to_numeric(table[mos_src], errors="coerce").astype("float64")
    bad = table[mos_src][mos.isna() & table[mos_src].notna()]
    if len(bad):
        raise ConfigError(f"non-numeric {mos_src!r} values, e.g. {list(bad[:_EXAMPLES])}")
    rest = table.drop(columns=[key_src, mos_src])
    # A "key"/"mos" column that was not chosen (explicit override) survives under a new name.
    rest = rest.rename(columns={c: f"original_{c}" for c in (KEY, MOS) if c in rest.columns})
    out = pd.concat([pd.DataFrame({KEY: keys, MOS: mos}), rest], axis=1).reset_index(drop=True)
    out.attrs.update(key_column=str(key_src), mos_column=str(mos_src))
    return out


@dataclass(frozen=True)
class LabelMatch:
    """Score rows joined to labels, with the counts needed to judge the join.

    Attributes:
        table: the score rows whose uri found a label, with ``label_key``, ``mos`` and
            ``match`` ("exact" or "suffix") added; all rows of a matched uri are kept.
        n_uris: distinct uris in the score table.
        n_exact: uris equal to a label key.
        n_suffix: uris whose trailing path components equal a label key.
        n_unmatched_uris: uris with no label (their rows are not in ``table``).
        n_unused_labels: labels that no uri matched.
        unmatched_examples: up to 5 unmatched uris, sorted.
    """

    table: pd.DataFrame = field(repr=False)
    n_uris: int
    n_exact: int
    n_suffix: int
    n_unmatched_uris: int
    n_unused_labels: int
    unmatched_examples: tuple[str, ...]


def match_labels(scores_df: pd.DataFrame, labels_df: pd.DataFrame) -> LabelMatch:
    """Attach MOS to score rows: first by exact ``uri == key``, then by path suffix.

    A suffix match needs whole path components: ``s3://b/p/koniq/1.jpg`` matches the keys
    ``koniq/1.jpg`` and ``1.jpg`` but not ``niq/1.jpg``. Keys are compared with backslashes
    turned into ``/`` and a leading ``./`` or ``/`` removed. Candidates are found through a
    basename index, so the cost stays linear in the number of rows.

    Raises:
        ValueError: if ``scores_df`` lacks ``uri``/``image_id`` or already has an output column,
            or ``labels_df`` lacks ``key``/``mos`` (build it with :func:`read_labels`).
        ConfigError: if a uri suffix-matches several labels, or a label several distinct uris;
            the message lists examples.
    """
    _check_inputs(scores_df, labels_df)
    uris = pd.Series(scores_df[Col.URI].astype(str).unique(), dtype=object)
    key_set = set(labels_df[KEY])
    exact = {u: u for u in uris if u in key_set}
    rest_labels = labels_df[~labels_df[KEY].isin(exact)]
    suffix = _suffix_matches(uris[~uris.isin(exact)], rest_labels[KEY])
    uri_to_key = {**exact, **suffix}
    key_to_mos = dict(zip(labels_df[KEY], labels_df[MOS], strict=True))
    label_key = scores_df[Col.URI].astype(str).map(uri_to_key)
    matched = label_key.notna()
    table = scores_df.loc[matched].assign(
        **{
            LABEL_KEY: label_key[matched],
            MOS: label_key[matched].map(key_to_mos).astype("float64"),
            MATCH: scores_df.loc[matched, Col.URI]
            .astype(str)
            .isin(exact)
            .map({True: "exact", False: "suffix"}),
        }
    )
    unmatched = sorted(set(uris) - set(uri_to_key))
    result = LabelMatch(
        table=table.reset_index(drop=True),
        n_uris=len(uris),
        n_exact=len(exact),
        n_suffix=len(suffix),
        n_unmatched_uris=len(unmatched),
        n_unused_labels=len(key_set - set(uri_to_key.values())),
        unmatched_examples=tuple(unmatched[:_EXAMPLES]),
    )
    logger.info(
        "labels matched: %d exact, %d by suffix, %d uris unmatched, %d labels unused",
        result.n_exact, result.n_suffix, result.n_unmatched_uris, result.n_unused_labels,
    )  # fmt: skip
    return result


def _check_inputs(scores_df: pd.DataFrame, labels_df: pd.DataFrame) -> None:
    missing = [c for c in (Col.URI, Col.IMAGE_ID) if c not in scores_df.columns]
    missing += [c for c in (KEY, MOS) if c not in labels_df.columns]
    if missing:
        raise ValueError(f"match_labels: missing columns {missing} (labels: use read_labels)")
    taken = [c for c in (LABEL_KEY, MOS, MATCH) if c in scores_df.columns]
    if taken:
        raise ValueError(f"match_labels: scores already have output columns {taken}")


def _normalise_key(key: str) -> str:
    key = key.replace("\\", "/")
    while key.startswith(("./", "/")):
        key = key[2:] if key.startswith("./") else key[1:]
    return key


def _suffix_matches(uris: pd.Series, keys: pd.Series) -> dict[str, str]:
    """uri -> label key for uris that end with ``/`` + a normalised key (or equal it)."""
    norm = keys.map(_normalise_key)
    left = pd.DataFrame({"uri": uris, "base": uris.map(posixpath.basename)})
    right = pd.DataFrame({"key": keys, "norm": norm, "base": norm.map(posixpath.basename)})
    cand = left.merge(right, on="base")
    ok = [u == k or u.endswith("/" + k) for u, k in zip(cand["uri"], cand["norm"], strict=True)]
    cand = cand.loc[pd.Series(ok, index=cand.index, dtype=bool)]
    _raise_if_ambiguous(cand, "uri", "key", "matches several labels")
    _raise_if_ambiguous(cand, "key", "uri", "is matched by several uris")
    return dict(zip(cand["uri"], cand["key"], strict=True))


def _raise_if_ambiguous(cand: pd.DataFrame, by: str, other: str, what: str) -> None:
    # (uri, key) pairs are unique here, so a group of size > 1 has several distinct partners.
    sizes = cand.groupby(by).size()
    bad = sizes[sizes > 1]
    if len(bad):
        shown = cand[cand[by].isin(bad.index[:_EXAMPLES])].groupby(by)[other].agg(list)
        examples = "; ".join(f"{k!r} -> {v[:3]}" for k, v in shown.items())
        raise ConfigError(
            f"ambiguous label match: {len(bad)} {by}(s) {what}, e.g. {examples}; "
            "give labels longer relative paths or full uris"
        )
