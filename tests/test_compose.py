"""docker-compose.yml and the Dockerfile, checked without Docker.

The compose file is validated against the Compose specification's JSON schema
(``../shared/compose-spec/compose-spec.json`` beside the repository), and its
services are run as local processes the way Docker would run them: each
service's command with its environment, ``${VAR:-default}`` replaced by the
default, service hostnames and 0.0.0.0 mapped to loopback, container ports to
free ports, and volumes to folders under ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.databases import PostgresServer
from tests.processes import ROOT, Service, running, start_service
from tests.scrape import metric_families

SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "compose-spec" / "compose-spec.json"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
HA_SERVICES = ("postgres", "controller-ha", "sensor-ha")
MONITORING_SERVICES = ("prometheus",)
IMAGE_SERVICES = {"postgres", "prometheus"}
"""Official images run with their own command: nothing of ours to run locally."""
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
METRICS_ON = r"metrics on 127\.0\.0\.1:(\d+)"
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def interpolate(text: str) -> str:
    """Docker's ``${VAR:-default}`` with every variable unset (the defaults)."""

    def default(match: re.Match[str]) -> str:
        if match["default"] is None:
            raise AssertionError(f"{match[0]} in docker-compose.yml has no default")
        return match["default"]

    return _VARIABLE.sub(default, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment"
    return {name: interpolate(str(value)) for name, value in env.items()}


def module_of(command: list[str]) -> tuple[str, list[str]]:
    assert command[:2] == ["python", "-m"], command
    return command[2], command[3:]


def test_compose_file_matches_the_compose_schema(compose: dict[str, Any]) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"the Compose schema is not at {SCHEMA} (../shared beside the repository)")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(compose)


def test_compose_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # `docker compose up` starts these: the services of no profile
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"manipulator", "controller", "sensor"}
    assert {name for name in services if name not in default} == {
        *HA_SERVICES,
        *MONITORING_SERVICES,
    }
    controller, sensor = services["controller"], services["sensor"]
    assert controller["ports"] == ["127.0.0.1:${WORKCELL_CONTROLLER_PORT:-50051}:50051"]
    assert "manipulator" in controller["depends_on"]
    assert sensor["depends_on"]["controller"]["condition"] == "service_healthy"
    assert sensor["deploy"]["replicas"] == 8
    assert "WORKCELL_SENSOR_ID" not in sensor["environment"]
    assert controller["healthcheck"]["test"] == [
        "CMD", "python", "-m", "workcell.healthcheck", "127.0.0.1:50051",
    ]  # fmt: skip
    assert any(v.endswith(":/data") for v in controller["volumes"])
    assert controller["volumes"][0].split(":")[0] in compose["volumes"]
    for name in ("manipulator", "controller"):
        listen = [v for k, v in services[name]["environment"].items() if k.endswith("_LISTEN")]
        assert listen
        assert all(v.startswith("0.0.0.0:") for v in listen)


def test_ha_profile_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in HA_SERVICES:
        assert services[name]["profiles"] == ["ha"]
    postgres, controller, sensor = (services[name] for name in HA_SERVICES)
    assert postgres["image"].startswith("postgres:")  # the official image
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.startswith("postgres:") for v in postgres["volumes"])
    assert "postgres" in compose["volumes"]
    assert controller["deploy"]["replicas"] == 3
    database = environment(controller)["WORKCELL_DATABASE"]
    assert database.startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in database
    assert controller["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert controller["healthcheck"] == services["controller"]["healthcheck"]
    # every replica shares the default controller's settings but the database
    same = {k: v for k, v in environment(controller).items() if k != "WORKCELL_DATABASE"}
    assert same == {
        k: v for k, v in environment(services["controller"]).items() if k != "WORKCELL_DATABASE"
    }
    # the sensors address the replicas by one name (the DNS case of --controller)
    assert environment(sensor)["WORKCELL_CONTROLLER_ADDRESS"] == "controller-ha:50051"
    assert sensor["depends_on"]["controller-ha"]["condition"] == "service_healthy"
    assert sensor["deploy"]["replicas"] == 8


def test_monitoring_profile_shape(compose: dict[str, Any]) -> None:
    """Profile monitoring: the official Prometheus image with our scrape config and rules."""
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert prometheus["image"].startswith("prom/prometheus:")
    # The folder holding prometheus.yml and alerts.yml, where the image reads its config.
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert any(v.startswith("prometheus:/prometheus") for v in prometheus["volumes"])
    assert "prometheus" in compose["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in prometheus["ports"])  # loopback only


def _metrics_port(service: dict[str, Any]) -> int:
    listen = environment(service)["WORKCELL_METRICS_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0", listen  # reachable from Prometheus's container
    return int(port)


def test_prometheus_scrapes_every_service_where_it_serves_metrics(
    compose: dict[str, Any],
) -> None:
    """Every service of ours serves /metrics, and prometheus.yml has a job scraping it there."""
    services = compose["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A"
            for name in dns["names"]:
                scraped[name] = int(dns["port"])
        # A job per service, named after it: the alert rules group cells by job.
        assert job["job_name"] in scraped, job
    ours = {name for name, service in services.items() if "command" in service}
    assert set(scraped) == ours
    for name in ours:
        assert _metrics_port(services[name]) == scraped[name], name
    # Replicated services are found through DNS (a target per replica), the others statically.
    for job in config["scrape_configs"]:
        replicas = services[job["job_name"]].get("deploy", {}).get("replicas", 1)
        assert ("dns_sd_configs" in job) == (replicas > 1), job


def test_every_setting_is_in_env_example(compose: dict[str, Any]) -> None:
    """Each ``${VAR:-default}`` appears in .env.example with the same default."""
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    used = {m["name"]: m["default"] for m in _VARIABLE.finditer(COMPOSE.read_text())}
    assert used
    assert used == {name: example.get(name) for name in used}


def test_commands_refer_to_modules_that_exist(compose: dict[str, Any]) -> None:
    ours = {name: s for name, s in compose["services"].items() if "command" in s}
    assert set(compose["services"]) - set(ours) == IMAGE_SERVICES  # the official images' own
    for name, service in ours.items():
        module, _ = module_of(service["command"])
        assert importlib.util.find_spec(module) is not None, name
        assert importlib.util.find_spec(f"{module}.__main__") is not None, name
    health = compose["services"]["controller"]["healthcheck"]["test"]
    assert importlib.util.find_spec(module_of(health[1:])[0]) is not None


def test_dockerfile_builds_one_runtime_image_run_as_non_root() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    installs = [line for line in instructions if "pip install" in line]
    assert installs
    assert all("[dev]" not in line and "-e" not in line.split() for line in installs)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    (cmd,) = [line for line in instructions if line.startswith(("CMD ", "ENTRYPOINT "))]
    command = json.loads(cmd.split(None, 1)[1])  # exec form, so signals reach the process
    assert command == ["workcell", "--help"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[command[0]].partition(":")
    assert importlib.util.find_spec(module) is not None
    # The CMD as the image runs it: the console script installed by pip.
    script = Path(sys.executable).with_name(command[0])
    done = subprocess.run(
        [str(script), *command[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
    assert "history" in done.stdout
    assert function == "main"


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_dependencies_are_a_layer_of_their_own_before_the_sources(tmp_path: Path) -> None:
    """A code edit rebuilds the layers from the sources on, not the dependencies' install."""
    steps = dockerfile_instructions()
    copies = [i for i, step in enumerate(steps) if step.startswith("COPY ")]
    alone = [i for i in copies if steps[i].split()[1:-1] == ["pyproject.toml"]]
    assert alone, f"no COPY of pyproject.toml alone: {steps}"
    pyproject = alone[0]
    sources = [
        i for i in copies if set(steps[i].split()[1:-1]) & {"workcell", "controller", "sensor"}
    ]
    installs = [i for i, step in enumerate(steps) if "pip install" in step]
    assert len(installs) == 2, steps
    dependencies, package = installs
    # pyproject.toml alone, then the dependencies, then the sources, then the package.
    assert pyproject < dependencies < min(sources) < package, steps
    assert all(not (pyproject < i < dependencies) for i in copies), steps
    assert {"--no-deps", "--no-build-isolation"} <= set(steps[package].split()), steps[package]
    assert "--requirement requirements.txt" in steps[dependencies], steps[dependencies]
    # The requirements are made from pyproject.toml: run that part of the step here.
    make_list = steps[dependencies].removeprefix("RUN ").split("&&")[0]
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", make_list], cwd=tmp_path, env=env, check=True, timeout=30)
    listed = (tmp_path / "requirements.txt").read_text().split()
    pyproject_toml = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = pyproject_toml["build-system"]["requires"] + pyproject_toml["project"]["dependencies"]
    assert listed == needed


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", ".env"} <= ignored


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """The services see only the compose file's settings, not the caller's."""
    for name in list(os.environ):
        if name.startswith("WORKCELL_"):
            monkeypatch.delenv(name)


def localize(value: str, *, hosts: dict[str, str], volumes: dict[str, Path]) -> str:
    """A container's value as a local process needs it."""
    for target, folder in volumes.items():
        value = value.replace(f"{target}/", f"{folder}/")
    if value.startswith("0.0.0.0:"):
        return "127.0.0.1:0"
    return hosts.get(value, value)


def start_compose_service(
    compose: dict[str, Any],
    name: str,
    tmp_path: Path,
    hosts: dict[str, str],
    *,
    extra_args: tuple[str, ...] = (),
    wait_listening: bool = True,
) -> Service:
    service = compose["services"][name]
    volumes = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        volumes[target] = tmp_path / source
        volumes[target].mkdir(exist_ok=True)
    env = {k: localize(v, hosts=hosts, volumes=volumes) for k, v in environment(service).items()}
    module, args = module_of(service["command"])
    return start_service(
        module, [*args, *extra_args], name=name, env=env, wait_listening=wait_listening
    )


def test_services_run_as_compose_runs_them(
    compose: dict[str, Any], tmp_path: Path, clean_environ: None
) -> None:
    hosts: dict[str, str] = {}
    manipulator = start_compose_service(compose, "manipulator", tmp_path, hosts)
    controller = sensor = None
    with running(manipulator):
        _assert_serves_metrics(manipulator, "manipulator")
        hosts["manipulator:7700"] = f"127.0.0.1:{manipulator.port}"
        controller = start_compose_service(compose, "controller", tmp_path, hosts)
        with running(controller):
            _assert_serves_metrics(controller, "controller")
            hosts["controller:50051"] = f"127.0.0.1:{controller.port}"
            # The healthcheck runs inside the controller's container: its 50051 is ours.
            hosts["127.0.0.1:50051"] = hosts["controller:50051"]
            probe = [
                localize(part, hosts=hosts, volumes={})
                for part in compose["services"]["controller"]["healthcheck"]["test"][1:]
            ]
            module, args = module_of(probe)
            healthy = _wait_healthy([sys.executable, "-m", module, *args])
            assert healthy.returncode == 0, healthy.stderr

            sensor = start_compose_service(
                compose,
                "sensor",
                tmp_path,
                hosts,
                extra_args=("--count", "60"),
                wait_listening=False,
            )
            with running(sensor):
                _assert_serves_metrics(sensor, "sensor")
                assert sensor.wait(60) == 0, sensor.output()
            assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()
    assert (tmp_path / "database" / "workcell.db").is_file()
    assert (tmp_path / "journal" / "journal.jsonl").exists()


def _assert_serves_metrics(service: Service, name: str) -> None:
    """The service logged its metrics port and serves its build info there."""
    port = int(service.wait_for_line(METRICS_ON).group(1))
    families = {family.name: family for family in metric_families(port)}
    [build] = families["workcell_build_info"].samples
    assert build.labels["service"] == name


def _wait_healthy(command: list[str], attempts: int = 20) -> subprocess.CompletedProcess[str]:
    """Like compose's retries: probe until it passes or the attempts run out."""
    for _ in range(attempts):
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0:
            break
        time.sleep(0.25)
    return done


def test_ha_services_run_as_compose_runs_them(
    compose: dict[str, Any], tmp_path: Path, clean_environ: None, postgres_server: PostgresServer
) -> None:
    """Profile ha: the replicas of controller-ha on one PostgreSQL database, sensor-ha on them.

    The postgres service (the official image) cannot run here: the database
    URL that names it is replaced by a fresh database on the throwaway
    server. Compose's DNS answers ``controller-ha`` with every replica's
    address; the local stand-in is the list of the replicas' addresses.
    """
    services = compose["services"]
    replicas_n = services["controller-ha"]["deploy"]["replicas"]
    count = 900
    with postgres_server.fresh_database() as database:
        hosts = {environment(services["controller-ha"])["WORKCELL_DATABASE"]: database.url}
        manipulator = start_compose_service(compose, "manipulator", tmp_path, hosts)
        with running(manipulator):
            hosts["manipulator:7700"] = f"127.0.0.1:{manipulator.port}"
            replicas: list[Service] = []
            with contextlib.ExitStack() as stack:
                for _ in range(replicas_n):
                    replica = start_compose_service(compose, "controller-ha", tmp_path, hosts)
                    stack.enter_context(running(replica))
                    replicas.append(replica)
                for replica in replicas:
                    # each replica's healthcheck runs in its own container: its 50051 is its port
                    probe = [
                        localize(
                            part, hosts={"127.0.0.1:50051": f"127.0.0.1:{replica.port}"}, volumes={}
                        )
                        for part in services["controller-ha"]["healthcheck"]["test"][1:]
                    ]
                    module, args = module_of(probe)
                    healthy = _wait_healthy([sys.executable, "-m", module, *args])
                    assert healthy.returncode == 0, healthy.stderr
                hosts["controller-ha:50051"] = ",".join(f"127.0.0.1:{r.port}" for r in replicas)
                sensor = start_compose_service(
                    compose,
                    "sensor-ha",
                    tmp_path,
                    hosts,
                    extra_args=("--count", str(count)),
                    wait_listening=False,
                )
                with running(sensor):
                    assert sensor.wait(60) == 0, sensor.output()
                for replica in replicas:
                    assert replica.stop() == 0, replica.output()
            assert manipulator.stop() == 0, manipulator.output()
        [(readings,)] = database.fetch("SELECT count(*) FROM readings")
    assert readings == count
