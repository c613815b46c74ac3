"""The README's grpcurl examples of the live API, run with the real grpcurl binary
against real processes: History/Watch (from an id, resumed from a cursor),
Sensors/ListRuns and Nodes/GetLeadership."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.processes import running, sqlite_url, start_controller, start_manipulator, start_sensor
from tests.test_e2e import grpcurl


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl prints one after the other for a stream."""
    decoder = json.JSONDecoder()
    objects, position = [], 0
    text = text.strip()
    while position < len(text):
        found, end = decoder.raw_decode(text, position)
        objects.append(found)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return objects


def test_grpcurl_runs_the_readme_examples_of_watch_and_list_runs(tmp_path: Path) -> None:
    manipulator = start_manipulator(tmp_path / "journal.jsonl")
    assert manipulator.port is not None
    controller = start_controller(
        sqlite_url(tmp_path / "w.db"),
        "--period", "0.3",
        "--grace", "0.05",
        manipulator_port=manipulator.port,
    )  # fmt: skip
    assert controller.port is not None
    address = f"127.0.0.1:{controller.port}"
    sensor = start_sensor(controller.port, "--rate", "50", sensor_id="probe")
    with running(manipulator, controller, sensor):
        controller.wait_for_line(r"command 4 acknowledged", 60)
        listed = grpcurl("-plaintext", address, "list")
        assert "workcell.v1.Sensors" in listed.stdout, listed.stderr

        # README: "Every command from the first on, then each new one as it comes"
        # (it streams until Ctrl-C; -max-time ends it here).
        watched = grpcurl(
            "-plaintext", "-max-time", "2", "-d", '{"after_command_id": 0}',
            address, "workcell.v1.History/Watch",
        )  # fmt: skip
        events = json_objects(watched.stdout)
        assert events, watched.stderr
        issued = [int(e["command"]["commandId"]) for e in events if e["kind"].endswith("ISSUED")]
        assert issued[:4] == [1, 2, 3, 4]
        first = events[0]
        assert first["kind"] == "COMMAND_EVENT_KIND_ISSUED"
        assert first["resumeAfterCommandId"] == "1"

        # README: "Resume after the last event received, from its two resume fields".
        resumed = json_objects(
            grpcurl(
                "-plaintext",
                "-max-time",
                "2",
                "-d",
                '{"after_command_id": 2, "acknowledged_through": 1}',
                address,
                "workcell.v1.History/Watch",
            ).stdout
        )
        assert [(e["kind"], e["command"]["commandId"]) for e in resumed[:2]] == [
            ("COMMAND_EVENT_KIND_ACKNOWLEDGED", "2"),
            ("COMMAND_EVENT_KIND_ISSUED", "3"),
        ]

        # README: "The sensor runs this node stores readings of".
        runs = grpcurl("-plaintext", address, "workcell.v1.Sensors/ListRuns")
        assert runs.returncode == 0, runs.stderr
        answer = json.loads(runs.stdout)
        [run] = answer["runs"]
        assert run["sensorId"] == "probe"
        assert run["live"] is True
        assert int(run["stored"]) > 0
        assert answer["period"] == "0.300s"

        # README: "Which node leads" (the only node, on SQLite: term 1, no lease expiry).
        role = grpcurl("-plaintext", address, "workcell.v1.Nodes/GetLeadership")
        assert role.returncode == 0, role.stderr
        leadership = json.loads(role.stdout)
        assert (leadership["leading"], leadership["epoch"]) == (True, "1")
        assert leadership["leaderAddress"] == address
        assert leadership["leaderNode"] == leadership["node"]
        assert "leaseExpiresAt" not in leadership
        sensor.stop()
        controller.stop()
        manipulator.stop()
