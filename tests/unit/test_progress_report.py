"""Pure parts of the live progress line and of the HTML reports."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from iqa_ray.analysis import svg
from iqa_ray.analysis.report import Tile, gallery, page, table
from iqa_ray.analysis.run_digest import display_names
from iqa_ray.scoring.progress import ProgressCounter, ProgressPrinter, batch_counts, format_progress


def test_progress_line_has_counts_rate_eta_and_errors() -> None:
    line = format_progress(250, 1000, 100, 65.0, 5.0, {"not_found": 1, "decode_failed": 3})
    assert line.startswith("progress: 250/1000 images (25.0%), 5.00 images/s, ETA 2:30")
    assert "elapsed 1:05" in line and "committed 100" in line
    assert line.endswith("errors: decode_failed=3 not_found=1")  # sorted by code


def test_progress_line_before_the_first_batch_and_with_a_bar() -> None:
    assert "starting" in format_progress(0, 10, 0, 3.0, None, {})
    bar = format_progress(5, 10, 0, 3.0, 1.0, {}, bar=True)
    assert bar.startswith("[" + "#" * 12 + "." * 12 + "] 5/10")
    assert "ETA 0:05" in bar
    assert "1:00:00" in format_progress(1, 3601, 0, 1.0, 1.0, {})  # hours when it takes hours
    assert "scored, writing the last files (committed 4)" in format_progress(9, 9, 4, 1.0, 1.0, {})


def test_batch_counts_count_error_rows_by_code() -> None:
    wide = pa.table({"a::error_code": ["", "x", None, "x"], "b::error_code": ["y", "x", None, ""]})
    assert batch_counts(wide, ["a::error_code", "b::error_code"]) == (4, {"x": 3, "y": 1})


class _Handle:
    """Stands in for an actor handle: ``snapshot.remote()`` returns a value ray.get accepts."""

    def __init__(self, counter: ProgressCounter) -> None:
        import ray

        self.snapshot = type("M", (), {"remote": staticmethod(lambda: ray.put(counter.snapshot()))})


def test_printer_writes_one_line_per_tick_without_a_terminal(ray_local: None) -> None:
    counter = ProgressCounter()
    counter.add(3, {"empty_file": 1})
    stream = io.StringIO()
    printer = ProgressPrinter(10, _Handle(counter), stream=stream, interval=0.1)
    printer.print_line()
    counter.add(2, {})
    printer.print_line(final=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("progress: 3/10 images")
    assert lines[1].startswith("progress: 5/10 images") and "empty_file=1" in lines[1]


def test_histogram_svg_draws_one_bar_per_bin_with_data() -> None:
    out = svg.histogram_svg(np.array([1.0, 1.0, 2.0, np.nan]), "t", "#123456", bins=4)
    assert out.startswith("<svg") and out.endswith("</svg>")
    assert out.count('fill="#123456"') == 4
    assert "no scores" in svg.histogram_svg([], "empty")


def test_scatter_svg_draws_points_and_the_curve() -> None:
    out = svg.scatter_svg([1, 2, 3], [2, 4, np.inf], "s", "x", "y",
                          curve=(np.array([1.0, 3.0]), np.array([2.0, 4.0])))
    assert out.count("<circle") == 2 and "<polyline" in out


def test_page_escapes_text_and_shows_unreadable_images() -> None:
    html = page("a<b", [table(__import__("pandas").DataFrame({"x": ["<i>"], "n": [1234]})),
                        gallery([Tile("s3://b/k.jpg", "cap")], {"s3://b/k.jpg": None})])
    assert "<title>a&lt;b</title>" in html and "&lt;i&gt;" in html and "1,234" in html
    assert "unreadable" in html


def test_display_names_are_relative_to_the_common_parent() -> None:
    names = display_names(["file:///d/x/a", "file:///d/x/b/c", "file:///d/x"])
    assert names == {"file:///d/x/a": "a", "file:///d/x/b/c": "b/c", "file:///d/x": "."}
    assert display_names(["s3://b/p"]) == {"s3://b/p": "."}
