"""Reliability: hostile inputs, storage faults, retries of errors, and process faults.

Every scenario reconciles the committed rows: one current row per (image, method), no double
write, no loss. Loopback only (moto S3, a fault proxy, local Ray); fake backend throughout.
The node-loss scenario runs on the simulated cluster of test_multinode.py (one start-up).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iqa_ray import io as iqa_io
from tests.faults.common import METHODS, Tally, latest
from tests.faults.process_faults import driver_kill_scenario
from tests.faults.storage_faults import (
    CLEARED,
    EXPECTED_GETS,
    STORAGE_FAULTS,
    current_codes,
    hostile_scenario,
    storage_fault_scenario,
)
from tests.hostile import UNICODE_NAME


def gcs_address() -> str:
    """The session Ray's address, for job subprocesses that attach to it as drivers."""
    import ray

    return ray.get_runtime_context().gcs_address


def assert_clean(tally: Tally, expected_rows: int) -> None:
    """One current row per expected (image, method); nothing written twice, nothing lost."""
    assert tally.rows_expected == expected_rows
    assert tally.rows_current == expected_rows
    assert tally.duplicates == 0
    assert tally.missing == 0


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("ray_local")
def test_hostile_inputs_through_s3_while_score_actor_dies(
    tmp_path: Path, moto_endpoint: str, s3_bucket: tuple[str, dict]
) -> None:
    outcome, df, expected = hostile_scenario(moto_endpoint, s3_bucket[0], tmp_path)
    assert outcome.detail["crashed_pid"] is not None, "the score actor never crashed"
    assert_clean(outcome.tally, len(expected) * len(METHODS))
    assert outcome.tally.rows_written == len(df) == len(expected) * len(METHODS)
    assert (df["attempt"] == 0).all()  # the crashed batch was redone inside the run
    for uri, code in expected.items():
        rows = df[df["uri"] == uri]
        assert sorted(rows["method"]) == sorted(METHODS), uri  # once per method, dupes included
        if code is None:
            assert rows["error_code"].isna().all() and rows["score"].notna().all(), (uri, rows)
        else:
            assert (rows["error_code"] == code).all(), (uri, rows["error_code"].tolist())
            assert rows["score"].isna().all()
    # EXIF orientation 6/8 on a 64x32 landscape: scored upright, i.e. 32 wide and 64 tall.
    for name in ("exif6.jpg", "exif8.jpg"):
        rows = df[df["uri"].str.endswith("/" + name)]
        assert (rows["width"] == 32).all() and (rows["height"] == 64).all(), name
    assert df["uri"].str.endswith("/" + UNICODE_NAME).sum() == len(METHODS)
    summary = iqa_io.read_json(f"{s3_bucket[0]}/out/runs/hostile/run.json", s3_bucket[1])["summary"]
    assert summary == outcome.detail["summary"]
    n_bad = sum(code is not None for code in expected.values())
    assert summary["rows_by_status"] == {"ok": (len(expected) - n_bad) * 2, "error": n_bad * 2}
    assert summary["infra_failures"] == 0 and summary["images_missing"] == 0
    for method in METHODS:
        assert summary["rows_by_method_and_error_code"][method]["not_found"] == 1


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("ray_local")
def test_storage_faults_exit_status_and_retry_errors(
    tmp_path: Path, moto_endpoint: str, s3_bucket: tuple[str, dict]
) -> None:
    got = storage_fault_scenario(moto_endpoint, s3_bucket[0], tmp_path, gcs_address())
    assert not got.outcome.detail["proxy_capped"]  # the proxy's request cap was never hit
    # Transient faults were retried (the proxy saw each retry), permanent ones failed fast.
    assert got.gets_first == {**EXPECTED_GETS, "text.jpg": 1, "plain1.jpg": 1}
    codes = current_codes(got.first)
    for key, (_, code) in STORAGE_FAULTS.items():
        assert codes[key] == {code}, (key, codes[key])
    assert codes["text.jpg"] == {"decode_failed"} and codes["plain1.jpg"] == {None}
    # Exit status 3 while infrastructure failures remain; run.json counts them.
    assert got.failing.returncode == 3, got.failing.stderr[-3000:]
    assert got.failing.summary is not None
    assert got.failing.summary["infra_failures"] == 2 * len(METHODS)
    assert got.failing.summary["rows_by_error_code"]["fetch_failed"] == 2 * len(METHODS)
    # --retry-errors read again only the fetch_failed objects; the cleared one is now scored,
    # the one still down failed again, tolerated by fail_on_infra_errors=false: exit status 0.
    assert got.retried.returncode == 0, got.retried.stderr[-3000:]
    assert got.gets_retry == {**dict.fromkeys(got.gets_retry, 0), CLEARED: 1,
                              "down.jpg": EXPECTED_GETS["down.jpg"]}
    now = latest(got.final)
    names = now["uri"].str.rsplit("/", n=1).str[-1]
    retried = names.isin([CLEARED, "down.jpg"])
    assert (now[retried]["attempt"] == 1).all() and (now[~retried]["attempt"] == 0).all()
    codes = current_codes(got.final)
    assert codes[CLEARED] == {None} and codes["down.jpg"] == {"fetch_failed"}
    assert codes["gone.jpg"] == {"not_found"} and codes["text.jpg"] == {"decode_failed"}
    assert got.retried.summary["infra_failures"] == len(METHODS)
    assert got.retried.summary["rows_superseded"] == 2 * len(METHODS)
    assert_clean(got.outcome.tally, 10 * len(METHODS))
    assert got.outcome.tally.rows_written == 12 * len(METHODS)  # + the superseded failures


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("ray_local")
def test_killed_driver_then_rerun_resumes(tmp_path: Path) -> None:
    outcome = driver_kill_scenario(tmp_path, gcs_address())
    detail = outcome.detail
    assert detail["killed_rc"] == -9 and detail["status_at_kill"] == "running"
    assert 0 < detail["images_at_kill"] < 16, detail["images_at_kill"]
    assert_clean(outcome.tally, 16 * len(METHODS))
    # Rows committed before the kill were kept; only the rest was scored by the rerun.
    before, df = detail["before"], detail["df"]
    kept = df.merge(before, on=["image_id", "method", "attempt"])
    assert len(kept) == len(before) and (before["attempt"] == 0).all()
    assert set(df["attempt"]) == {0, 1}
