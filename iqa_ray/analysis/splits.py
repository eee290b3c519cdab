"""The papers' evaluation protocol: metrics on each of several test splits, and their median.

Q-Align, Compare2Score and DeQA-Score report the median (Compare2Score: over 10 random splits)
of per-split SRCC and PLCC. A split is a file of image keys: plain text, one key per line, or
JSON (a list of keys, or of objects with an ``image``/``img_path``/... key, as the references'
test JSONs). Keys are matched to scored images like label keys (exact uri, else path suffix).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from iqa_ray.analysis import metrics
from iqa_ray.analysis.labels import KEY, KEY_ALIASES, MOS, match_labels
from iqa_ray.analysis.scores import valid_scores
from iqa_ray.errors import ConfigError
from iqa_ray.schema import Col

SPLIT_METRICS = ("srcc", "plcc", "plcc_logistic", "krcc")


def parse_split_keys(text: str) -> list[str]:
    """Image keys of one split file (text lines, or a JSON list of keys or objects).

    Raises:
        ConfigError: invalid JSON, an object without a key field, or no key at all.
    """
    stripped = text.lstrip("\ufeff").strip()
    if stripped[:1] == "[":
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ConfigError(f"invalid split JSON at offset {err.pos}: {err.msg}") from err
        keys = [_item_key(item) for item in items]
    else:
        keys = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not keys:
        raise ConfigError("split file holds no image key")
    return keys


def _item_key(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for alias in KEY_ALIASES:
            if alias in item:
                return str(item[alias])
    raise ConfigError(f"split item {str(item)[:80]!r} has no image key ({', '.join(KEY_ALIASES)})")


def split_rows(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` (with ``uri`` and ``image_id``) whose uri one of ``keys`` names."""
    probe = pd.DataFrame({KEY: list(dict.fromkeys(keys)), MOS: 0.0})
    matched = match_labels(frame[[Col.URI, Col.IMAGE_ID]].drop_duplicates(), probe).table
    return frame[frame[Col.URI].isin(set(matched[Col.URI]))]


def split_metrics(
    frame: pd.DataFrame, methods: list[str], splits: dict[str, list[str]]
) -> pd.DataFrame:
    """One row per (split, method): n and :data:`SPLIT_METRICS` on that split's images
    (``frame`` carries ``mos``; no bootstrap)."""
    rows = []
    for name, keys in splits.items():
        sub = split_rows(frame, keys)
        for method in methods:
            out = metrics.evaluate(valid_scores(sub, method), sub[MOS], n_boot=0)
            rows.append({"split": name, "method": method, "n": out["n"],
                         **{m: out[m] for m in SPLIT_METRICS}})
    return pd.DataFrame(rows)


def split_medians(per_split: pd.DataFrame) -> pd.DataFrame:
    """Per method: the number of splits, the median n and the median of each metric."""
    grouped = per_split.groupby("method", sort=False)
    out = grouped[["n", *SPLIT_METRICS]].median()
    out.insert(0, "splits", grouped.size())
    return out.reset_index()


def split_markdown(medians: pd.DataFrame) -> str:
    """The median table as markdown."""
    head = ["Method", "splits", "n (median)", "SRCC", "PLCC", "PLCC (4-param logistic)", "KRCC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in medians.itertuples(index=False):
        cells = [row.method, str(int(row.splits)), f"{row.n:g}",
                 *(f"{getattr(row, m):.3f}" for m in ("srcc", "plcc", "plcc_logistic", "krcc"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
