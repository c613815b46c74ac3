"""The Prometheus scrape config and alert rules under deploy/prometheus/, checked by promtool.

``promtool check config`` (the scrape config and the rule files it names),
``promtool check rules``, and ``promtool test rules`` on every unit test file
in deploy/prometheus/tests/ (each alert fires in one case and stays silent in
another). promtool comes from Debian's ``prometheus`` package
(``scripts/ensure_promtool.sh``, run by ``make test``); without it these tests
are skipped, except under CI, which must check the rules.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tests.databases import in_ci
from tests.processes import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTS = {
    "WorkcellDecisionOverdue",
    "WorkcellSensorSilent",
    "WorkcellNoReadings",
    "WorkcellReadingsStale",
    "WorkcellManipulatorLinkDown",
    "WorkcellCommandsUnacknowledged",
    "WorkcellDatabaseRefusingWrites",
    "WorkcellTargetDown",
}


def _missing(reason: str) -> NoReturn:
    """Skip, or fail under CI, which must check the rules (as tests/databases.py does)."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the alert rules must be checked)", pytrace=False)
    pytest.skip(reason)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args`` in deploy/prometheus/; fail the test with its output unless 0."""
    program = shutil.which("promtool")
    if program is None:
        _missing(
            "promtool not found: install the Debian package 'prometheus' "
            "(scripts/ensure_promtool.sh, run by make test)"
        )
    done = subprocess.run(
        [program, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROMETHEUS,
        check=False,
    )
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done


def _rules() -> list[dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _unit_tests() -> list[dict[str, Any]]:
    return [
        test
        for path in RULE_TESTS
        for test in (yaml.safe_load(path.read_text()) or {}).get("tests", [])
    ]


def test_the_scrape_config_and_the_rules_it_names_are_valid() -> None:
    done = promtool("check", "config", CONFIG)
    assert "1 rule files found" in done.stdout


def test_the_rules_are_valid() -> None:
    done = promtool("check", "rules", RULES)
    assert f"{len(ALERTS)} rules found" in done.stdout


def test_every_alert_passes_its_unit_tests() -> None:
    assert RULE_TESTS, "no rule unit tests in deploy/prometheus/tests/"
    done = promtool("test", "rules", *RULE_TESTS)
    assert "FAILED" not in done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """Without promtool: the unit test files cover each alert both ways."""
    assert {rule["alert"] for rule in _rules()} == ALERTS
    firing: set[str] = set()
    silent: set[str] = set()
    for test in _unit_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing == ALERTS
    assert silent == ALERTS


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
