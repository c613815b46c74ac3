"""The disk-use script (scripts/disk_use.py) end to end, on a tiny span: its numbers add up.

Sizes depend on SQLite's page layout, so only their consistency is asserted, and the property
retention exists for: with it, the second span does not grow the file by another span.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT

HOURS = 0.005  # 18 simulated seconds: 43,200 readings


def test_tiny_run_reports_consistent_sizes_and_a_flat_file_under_retention(
    tmp_path: Path,
) -> None:
    report = tmp_path / "disk_use.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "disk_use.py"),
            *("--hours", str(HOURS), "--json", str(report), "--dir", str(tmp_path / "db")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "steady / one span" in run.stdout
    result = json.loads(report.read_text())
    one, steady = result["one_span"], result["steady"]

    expected = round(8 * 300 * 3600 * HOURS)
    assert result["readings"] == one["readings_written"] == steady["readings_written"] == expected
    assert one["file"]["readings_stored"] == expected
    assert result["commands"] == one["file"]["commands_stored"] == 3  # one per 5 s
    # Retention kept exactly the last span and deleted the first.
    assert steady["file"]["readings_stored"] == expected
    assert steady["readings_deleted"] == expected
    assert steady["sweeps"] == 60

    for span in (one, steady):
        assert span["file"]["db_bytes"] > 0
        assert span["file"]["wal_bytes_max"] > 0
        assert span["file"]["wal_bytes_after_checkpoint"] == 0
        assert span["file"]["objects"]["readings"] > 0
    assert result["bytes_per_reading"] == one["file"]["db_bytes"] / expected
    assert result["mib_per_hour"] > 0
    assert result["mib_per_day"] == 24 * result["mib_per_hour"]

    # Freed pages are reused: the file holds about one span, not two.
    assert steady["file"]["db_bytes"] <= 1.5 * one["file"]["db_bytes"]
    assert result["steady_ratio"] == steady["file"]["db_bytes"] / one["file"]["db_bytes"]
    assert not list((tmp_path / "db").iterdir()), "the temporary database was left behind"
