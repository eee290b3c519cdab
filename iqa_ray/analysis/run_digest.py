"""A run's committed score files folded into what its report shows (``report_run``): counts,
extremes per method and per folder, error counts and examples.

Score files are read one at a time and folded into bounded state (extremes, per-folder sums, a
deterministic sample of at most ``SAMPLE_CAP`` scores per method for the histogram), so the
driver's memory does not grow with the corpus beyond one file and the per-folder table.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from iqa_ray import io
from iqa_ray.methods import get_method
from iqa_ray.schema import Col

N_BEST = 8  # best and worst images shown per method
N_GROUP = 4  # best and worst images shown per method in each folder shown
MAX_GROUPS_SHOWN = 6  # folders (the largest) that get thumbnails
SAMPLE_CAP = 200_000  # scores per method kept for the histogram and the median
N_ERROR_EXAMPLES = 5  # example rows per error code
_COLUMNS = [Col.IMAGE_ID, Col.URI, Col.METHOD, Col.SCORE, Col.ERROR_CODE, Col.ERROR_MESSAGE]
_GROUP, _KEY = "group", "_key"
_HASH_SPACE = 1_000_003


def _extremes(frame: pd.DataFrame, n: int, best: bool, by_group: bool) -> pd.DataFrame:
    """The ``n`` best (or worst) rows, overall or per group; ties broken by image id."""
    ordered = frame.sort_values([_KEY, Col.IMAGE_ID], ascending=[not best, True])
    return ordered.groupby(_GROUP, sort=False).head(n) if by_group else ordered.head(n)


@dataclass
class MethodStats:
    """What one method's scored rows fold into, file after file."""

    label: str
    higher_is_better: bool
    keep: float  # fraction of scores kept for the histogram (deterministic by image id)
    n: int = 0
    lo: float = float("inf")
    hi: float = float("-inf")
    total: float = 0.0
    sample: list[np.ndarray] = field(default_factory=list)
    best: pd.DataFrame | None = None
    worst: pd.DataFrame | None = None
    groups: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"count": [], "sum": []}, dtype="float64"))

    def add(self, ok: pd.DataFrame) -> None:
        """Fold in a file's rows of this method that have a score."""
        if ok.empty:
            return
        scores = ok[Col.SCORE].to_numpy(dtype=np.float64)
        self.n += scores.size
        self.lo, self.hi = min(self.lo, scores.min()), max(self.hi, scores.max())
        self.total += float(scores.sum())
        picked = (ok[Col.IMAGE_ID].to_numpy() % _HASH_SPACE) < self.keep * _HASH_SPACE
        self.sample.append(scores[picked])
        ok = ok.assign(**{_KEY: scores if self.higher_is_better else -scores})
        for attr, best in (("best", True), ("worst", False)):
            old = getattr(self, attr)
            both = ok if old is None else pd.concat([old, ok], ignore_index=True)
            overall = _extremes(both, N_BEST, best, by_group=False)
            grouped = _extremes(both, N_GROUP, best, by_group=True)
            setattr(self, attr, pd.concat([overall, grouped]).drop_duplicates(Col.IMAGE_ID))
        sums = ok.groupby(_GROUP)[Col.SCORE].agg(["count", "sum"])
        self.groups = self.groups.add(sums, fill_value=0)

    def values(self) -> np.ndarray:
        """The sampled scores."""
        return np.concatenate(self.sample) if self.sample else np.empty(0)

    def top(self, best: bool, group: str | None = None) -> pd.DataFrame:
        """The best (or worst) rows, overall or in one group."""
        rows = self.best if best else self.worst
        if rows is None:
            return pd.DataFrame(columns=[*_COLUMNS, _GROUP, _KEY])
        if group is not None:
            return _extremes(rows[rows[_GROUP] == group], N_GROUP, best, by_group=False)
        return _extremes(rows, N_BEST, best, by_group=False)


@dataclass
class RunDigest:
    """A run's score files folded into what its report shows."""

    methods: dict[str, MethodStats]
    group_images: pd.Series = field(default_factory=lambda: pd.Series(dtype="int64"))
    error_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add_file(self, frame: pd.DataFrame) -> None:
        """Fold in one score file (all methods)."""
        frame = frame.assign(**{_GROUP: frame[Col.URI].map(posixpath.dirname)})
        first = next(iter(self.methods), None)
        per_image = frame[frame[Col.METHOD] == first][_GROUP].value_counts()
        self.group_images = self.group_images.add(per_image, fill_value=0)
        failed = frame[Col.ERROR_CODE].notna()
        for label, rows in frame[~failed & frame[Col.SCORE].notna()].groupby(Col.METHOD):
            if label not in self.methods:
                self.methods[label] = MethodStats(str(label), True, 1.0)
            self.methods[label].add(rows)
        errors = frame[failed]
        for (method, code), n in errors.groupby([Col.METHOD, Col.ERROR_CODE]).size().items():
            self.error_counts[(method, code)] = self.error_counts.get((method, code), 0) + int(n)
        for code, rows in errors.groupby(Col.ERROR_CODE):
            kept = self.examples.setdefault(str(code), [])
            columns = [Col.URI, Col.METHOD, Col.ERROR_CODE, Col.ERROR_MESSAGE]
            kept += rows[columns].head(N_ERROR_EXAMPLES - len(kept)).to_dict("records")


def digest_run(run_uri: str, record: dict[str, Any],
               storage_options: dict[str, Any] | None) -> RunDigest:
    """Read a run's committed score files one at a time into a :class:`RunDigest`."""
    rows_by_method = (record.get("summary") or {}).get("rows_by_method") or {}
    methods = {}
    for spec in (record.get("config") or {}).get("methods", []):
        label = spec.get("name") or spec["method"]
        keep = min(1.0, SAMPLE_CAP / max(1, int(rows_by_method.get(label, 0))))
        methods[label] = MethodStats(label, get_method(spec["method"]).higher_is_better, keep)
    digest = RunDigest(methods)
    for uri in io.list_parquet(io.join(run_uri, "scores"), storage_options):
        digest.add_file(io.read_parquet(uri, storage_options, _COLUMNS).to_pandas())
    return digest


def display_names(groups: list[str]) -> dict[str, str]:
    """Folder names relative to the folders' longest common parent ("." for that parent)."""
    if not groups:
        return {}
    split = [g.split("/") for g in groups]
    n = 0
    while all(len(s) > n and s[n] == split[0][n] for s in split):
        n += 1
    if len(groups) == 1:
        n = len(split[0])
    return {g: "/".join(s[n:]) or "." for g, s in zip(groups, split, strict=True)}
