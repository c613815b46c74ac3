"""Runs the whole cell as child processes for ``workcell run``.

Start order is manipulator, controller(s), sensors: each server is started
only after the previous one logged ``listening on HOST:PORT``, and the next
tier is pointed at that real address. Stop order is the reverse (sensors
first so they flush into a live controller, the manipulator last so the
controller can deliver its last commands), each child SIGTERMed and waited
for with a timeout, then killed.

With ``--controllers N`` (PostgreSQL only: one SQLite file takes one
controller), N controller nodes share the database, on consecutive ports
from the configured one (or free ones for port 0); every sensor is given
all their addresses (gRPC spreads its streams over them, see
:mod:`workcell.targets`), and so is the live view (:mod:`workcell.cell_watch`,
which reads the controllers' API, never the children's logs). A node that dies
is reported; the cell stops only when no controller is left.

Children run in their own session so a Ctrl-C on the terminal reaches only
this process, which then stops them in that order; so does SIGTERM, and
SIGHUP (the terminal closed). Should this process die without stopping them
(SIGKILL), the kernel sends each one SIGTERM (:mod:`workcell.parent_death`);
and should whoever reads its output go away (``| head``, the terminal
closed), the cell is stopped as on SIGTERM. What the children inherit of
this process's environment: :mod:`workcell.cell_environment`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from workcell.cell_environment import child_environment
from workcell.cell_state import CellState, describe_exit
from workcell.cell_watch import CellWatcher
from workcell.flags import Address
from workcell.liveview import Display
from workcell.logs import log_message
from workcell.parent_death import guarded
from workcell.pipes import output_gone
from workcell.timeconv import now_us

__all__ = ["CellConfig", "Child", "ChildSpec", "run_cell"]

logger = logging.getLogger(__name__)

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
# MetricsEndpoint's line (workcell.metrics_http), not its "cannot serve metrics on" error.
_METRICS = re.compile(r"(?:^|: )metrics on (\S+):(\d+)$")
_LINE_LIMIT = 1 << 20  # a child's log line longer than this is cut, not fatal
TAIL_LINES = 20
START_TIMEOUT = 60.0
SENSOR_STOP_TIMEOUT = 15.0
CONTROLLER_STOP_TIMEOUT = 20.0
MANIPULATOR_STOP_TIMEOUT = 10.0
REFRESH_SECONDS = 0.5
MAX_CONTROLLERS = 16
SEVERAL_NEED_POSTGRESQL = (
    "several controllers need PostgreSQL (--database postgresql://...): "
    "a SQLite file takes one controller"
)
DEFAULT_CONTROLLER_LISTEN = Address("127.0.0.1", 50051)
DEFAULT_MANIPULATOR_LISTEN = Address("127.0.0.1", 7700)
DEFAULT_METRICS = Address("127.0.0.1", 0)
# The signals that stop the cell in order (SIGHUP: the terminal closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class CellConfig:
    """What ``workcell run`` was asked for (built from flags in the CLI)."""

    sensors: int = 8
    data: Path = Path("data")
    period: float = 5.0
    rate: float = 300.0
    controller_listen: Address = DEFAULT_CONTROLLER_LISTEN
    manipulator_listen: Address = DEFAULT_MANIPULATOR_LISTEN
    duration: float | None = None
    python: str = sys.executable
    log_format: str = "text"
    database: str | None = None
    """The controller's database URL; None: the SQLite file ``<data>/workcell.db``."""
    controllers: int = 1
    """Controller nodes on the database (more than one needs PostgreSQL)."""
    log_level: str = "INFO"
    """This command's log level; the children's is :attr:`child_log_level`."""
    metrics: Address | None = None
    """``--metrics``: where every process serves ``/metrics`` (None: nowhere); see
    :meth:`metrics_listens`."""

    def problem(self) -> str | None:
        """Why this cell cannot run as configured (None: it can)."""
        if not 1 <= self.controllers <= MAX_CONTROLLERS:
            return f"--controllers must be from 1 to {MAX_CONTROLLERS}, got {self.controllers}"
        if self.controllers > 1 and not self.database_url.startswith("postgresql"):
            return SEVERAL_NEED_POSTGRESQL
        if self.metrics is not None and self.metrics.port:
            processes = 1 + self.controllers + self.sensors
            last = self.metrics.port + processes - 1
            if last > 65535:
                return (
                    f"--metrics {self.metrics}: {processes} processes need ports up to {last}, "
                    "above 65535"
                )
        return None

    @property
    def child_log_level(self) -> str:
        """The children's log level: DEBUG with this command's, else INFO.

        Never above INFO: ``run`` learns the servers' addresses (and the view
        its figures) from the children's INFO lines, and their log files are
        what is left to read after a failure.
        """
        return "DEBUG" if self.log_level == "DEBUG" else "INFO"

    def metrics_listens(self) -> dict[str, Address]:
        """Each process's ``--metrics-listen``: all on free ports (port 0), or consecutive
        ports from the given one in start order (manipulator, controllers, sensors)."""
        if self.metrics is None:
            return {}
        names = ["manipulator", *self.controller_names, *self.sensor_ids]
        base = self.metrics
        step = 1 if base.port else 0
        return {name: Address(base.host, base.port + i * step) for i, name in enumerate(names)}

    @property
    def controller_names(self) -> list[str]:
        """``controller`` alone, or ``controller-1`` … ``controller-N``."""
        if self.controllers == 1:
            return ["controller"]
        return [f"controller-{i}" for i in range(1, self.controllers + 1)]

    @property
    def controller_listens(self) -> list[Address]:
        """Where each node listens: consecutive ports from ``controller_listen`` (0: free ones)."""
        listen = self.controller_listen
        step = 1 if listen.port else 0
        return [Address(listen.host, listen.port + i * step) for i in range(self.controllers)]

    @property
    def database_url(self) -> str:
        """``database``, or the SQLAlchemy URL of ``<data>/workcell.db`` (absolute path)."""
        if self.database is not None:
            return self.database
        return f"sqlite+aiosqlite:///{self.data.resolve() / 'workcell.db'}"

    @property
    def journal(self) -> Path:
        """The manipulator's journal, ``<data>/journal.jsonl``."""
        return self.data.resolve() / "journal.jsonl"

    @property
    def log_dir(self) -> Path:
        """Where each child's full output goes, ``<data>/logs``."""
        return self.data.resolve() / "logs"

    @property
    def sensor_ids(self) -> list[str]:
        """``sensor-1`` … ``sensor-N``."""
        return [f"sensor-{i}" for i in range(1, self.sensors + 1)]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One ``python -m module args`` child."""

    name: str
    module: str
    args: tuple[str, ...]


def reachable(listen: Address) -> Address:
    """The address to connect to for a server listening on ``listen``."""
    if listen.host in ("0.0.0.0", "::", ""):
        return Address("127.0.0.1", listen.port)
    return listen


class Child:
    """A running child: its output is teed to its log file, a tail and a callback."""

    def __init__(
        self,
        spec: ChildSpec,
        *,
        python: str,
        log_dir: Path,
        on_line: Callable[[str, str], None],
    ) -> None:
        self.spec = spec
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.address: Address | None = None
        self.stopping = False
        self._python = python
        self._log_path = log_dir / f"{spec.name}.log"
        self._on_line = on_line
        self._listening = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._log: IO[str] | None = None

    @property
    def name(self) -> str:
        """The child's name, e.g. ``controller`` or ``sensor-3``."""
        return self.spec.name

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once exited (negative: killed by that signal)."""
        return None if self._process is None else self._process.returncode

    async def start(self) -> None:
        """Start the process and the task that reads its output."""
        self._log = self._log_path.open("a", encoding="utf-8", buffering=1)
        # Through the guard that has the child sent SIGTERM should this process
        # die without stopping it; started from the event loop's thread, the main
        # one, as the kernel ties that signal to the forking thread.
        argv = guarded([self._python, "-m", self.spec.module, *self.spec.args], python=self._python)
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_environment(os.environ),
            start_new_session=True,
            limit=_LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read(), name=f"read {self.name}")
        logger.info("started %s (pid %d): %s", self.name, self._process.pid, self.command)

    @property
    def command(self) -> str:
        """The command line, for logs."""
        return " ".join(["python", "-m", self.spec.module, *self.spec.args])

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        stream = self._process.stdout
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                # Over the limit: take what is buffered and go on with the next line.
                raw = await stream.read(_LINE_LIMIT)
            if not raw:
                break
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if self._log is not None:
                self._log.write(line + "\n")
            self.tail.append(line)
            if self.address is None and (match := _LISTENING.search(log_message(line))):
                self.address = Address(match.group(1), int(match.group(2)))
                self._listening.set()
            self._on_line(self.name, line)

    async def wait_listening(self, within: float) -> Address | None:
        """The address from the child's ``listening on`` line; None if it exited first."""
        listening = asyncio.create_task(self._listening.wait())
        exited = asyncio.create_task(self.wait())
        try:
            await asyncio.wait({listening, exited}, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            listening.cancel()
            exited.cancel()
        return self.address

    async def wait(self) -> int:
        """Wait for exit and for the last output line; return the exit code."""
        assert self._process is not None
        code = await self._process.wait()
        if self._reader is not None:
            await asyncio.shield(self._reader)
        return code

    async def stop(self, within: float) -> int | None:
        """SIGTERM, wait up to ``within`` seconds, then SIGKILL; return the exit code."""
        if self._process is None:
            return None
        self.stopping = True
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.wait(), within)
        except TimeoutError:
            logger.warning("%s did not stop within %.0fs: killing it", self.name, within)
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            code = await self.wait()
        self.close_log()
        return code

    def close_log(self) -> None:
        """Close the child's log file (idempotent)."""
        if self._log is not None:
            self._log.close()
            self._log = None


class _Cell:
    """The children of one run, in start order, and how they end."""

    def __init__(
        self, config: CellConfig, state: CellState, display: Display, stop: asyncio.Event
    ) -> None:
        self.config = config
        self.state = state
        self.display = display
        self.children: list[Child] = []
        self.watcher: CellWatcher | None = None
        self.following: asyncio.Task[None] | None = None
        self.failed = False
        self.output_closed = False
        """Whoever read the view is gone (``| head``, the terminal closed)."""
        self.metrics: dict[str, Address] = {}
        """Where each child serves ``/metrics``, as it logged it."""
        self._stop_requested = stop
        self._started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def show(self) -> None:
        """Redraw the view; once its reader is gone, stop the cell (as on SIGTERM)."""
        if self.output_closed:
            return
        try:
            self.display.refresh(self.state, elapsed=self.elapsed(), now_us=now_us())
        except OSError as exc:
            if not output_gone(exc):
                raise
            self.output_closed = True
            logger.warning("output closed: stopping the cell (%s)", exc.strerror)
            self._stop_requested.set()

    def close_display(self) -> None:
        """The view's last frame, unless nobody reads it any more."""
        if self.output_closed:
            return
        try:
            self.display.close(self.state, elapsed=self.elapsed(), now_us=now_us())
        except OSError as exc:
            if not output_gone(exc):
                raise
            self.output_closed = True

    def _on_line(self, name: str, line: str) -> None:
        if name not in self.metrics and (match := _METRICS.search(log_message(line))):
            where = reachable(Address(match.group(1), int(match.group(2))))
            self.metrics[name] = where
            logger.info("%s metrics on http://%s/metrics", name, where)
            self.state.notes.append(f"metrics  {name:<14} http://{where}/metrics")

    def child(self, name: str, module: str, args: Sequence[str]) -> Child:
        # Every child logs in the cell's format (this command's log shows both), at
        # a level that keeps the INFO lines run reads (see CellConfig.child_log_level).
        args = [
            *args,
            "--log-format",
            self.config.log_format,
            "--log-level",
            self.config.child_log_level,
        ]
        metrics = self.config.metrics_listens().get(name)
        if metrics is not None:
            args += ["--metrics-listen", str(metrics)]
        child = Child(
            ChildSpec(name, module, tuple(args)),
            python=self.config.python,
            log_dir=self.config.log_dir,
            on_line=self._on_line,
        )
        self.children.append(child)
        return child

    def report_exit(self, child: Child) -> None:
        """Log and show a child that exited without being asked to."""
        code = child.returncode if child.returncode is not None else -1
        tail = list(child.tail)
        self.state.record_exit(child.name, code, tail)
        shown = "\n".join(f"  {child.name}| {line}" for line in tail[-10:]) or "  (no output)"
        logger.error(
            "%s exited unexpectedly (%s); its last output lines:\n%s",
            child.name,
            describe_exit(code),
            shown,
        )

    async def start_server(self, child: Child, stop: asyncio.Event) -> Address | None:
        """Start a server child and wait for its address (None: it failed or we stop)."""
        self.state.phase = f"starting {child.name}"
        await child.start()
        listening = asyncio.create_task(child.wait_listening(START_TIMEOUT))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({listening, stopped}, return_when="FIRST_COMPLETED")
        finally:
            stopped.cancel()
            listening.cancel()
        if stop.is_set():
            return None
        if child.address is None:
            if child.returncode is None:
                self.state.notes.append(f"{child.name} did not report listening in time")
                logger.error(
                    "%s did not log 'listening on' within %.0fs", child.name, START_TIMEOUT
                )
            else:
                await child.wait()
                self.report_exit(child)
            self.failed = True
            return None
        logger.info("%s listening on %s", child.name, child.address)
        return reachable(child.address)

    async def stop_all(
        self, before_controllers: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Stop sensors together, then the controllers together, then the manipulator.

        ``before_controllers`` runs once the sensors are gone and before the
        controllers go (the view's last look at them)."""
        sensors = [c for c in self.children if c.name.startswith("sensor-")]
        controllers = [c for c in self.children if c.name.startswith("controller")]
        others = [c for c in self.children if c not in sensors and c not in controllers]
        self.state.phase = "stopping sensors"
        await asyncio.gather(*(self._stop(c, SENSOR_STOP_TIMEOUT) for c in sensors))
        if before_controllers is not None:
            await before_controllers()
        if controllers:
            self.state.phase = "stopping " + ", ".join(c.name for c in controllers)
            await asyncio.gather(*(self._stop(c, CONTROLLER_STOP_TIMEOUT) for c in controllers))
        for child in reversed(others):
            self.state.phase = f"stopping {child.name}"
            await self._stop(child, MANIPULATOR_STOP_TIMEOUT)

    async def _stop(self, child: Child, within: float) -> None:
        already = child.returncode is not None
        code = await child.stop(within)
        if not already and code not in (0, None):
            logger.warning("%s stopped (%s)", child.name, describe_exit(code))
        elif not already:
            logger.info("%s stopped", child.name)

    async def refresh(self) -> None:
        while True:
            self.show()
            await asyncio.sleep(REFRESH_SECONDS)

    async def last_look(self) -> None:
        """Ask the controllers once more (every reading is in now: the sensors are gone),
        then stop following them: the final frame and summary show this state."""
        if self.watcher is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONTROLLER_STOP_TIMEOUT / 4):
                    await self.watcher.poll_once()
        await self.stop_following()

    async def stop_following(self) -> None:
        if self.following is not None:
            self.following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.following
            self.following = None

    async def run(self, stop: asyncio.Event) -> int:
        config = self.config
        manipulator = self.child(
            "manipulator",
            "manipulator",
            ["--listen", str(config.manipulator_listen), "--journal", str(config.journal)],
        )
        manipulator_address = await self.start_server(manipulator, stop)
        if manipulator_address is None:
            return 1 if self.failed else 0
        controller_addresses: list[Address] = []
        # One after the other: the first one migrates the schema, the others find it done.
        for name, listen in zip(config.controller_names, config.controller_listens, strict=True):
            controller = self.child(
                name,
                "controller",
                [
                    "--listen",
                    str(listen),
                    "--manipulator",
                    str(manipulator_address),
                    "--database",
                    config.database_url,
                    "--period",
                    repr(config.period),
                ],
            )
            controller_address = await self.start_server(controller, stop)
            if controller_address is None:
                return 1 if self.failed else 0
            controller_addresses.append(controller_address)
        controllers = ",".join(str(a) for a in controller_addresses)
        # The commands of this run, the nodes' roles and their sensors: from the API.
        self.watcher = CellWatcher(
            controller_addresses, self.state, from_now=True, on_event=self.display.event
        )
        # Followed until the controllers are about to stop (stop_following).
        self.following = asyncio.create_task(self.watcher.run(), name="follow the cell")
        self.state.phase = "starting sensors"
        for sensor_id in config.sensor_ids:
            sensor = self.child(
                sensor_id,
                "sensor",
                [
                    "--controller",
                    controllers,
                    "--sensor-id",
                    sensor_id,
                    "--rate",
                    repr(config.rate),
                    "--no-progress",
                ],
            )
            await sensor.start()
        self.state.phase = "running"
        await self.watch(stop)
        return 1 if self.failed else 0

    def _essential(self, gone: Child) -> bool:
        """Whether the cell stops without ``gone``: the manipulator, or the last controller."""
        if gone.name.startswith("sensor-"):
            return False
        if gone.name.startswith("controller"):
            others = [
                c
                for c in self.children
                if c is not gone and c.name.startswith("controller") and c.returncode is None
            ]
            if others:
                logger.warning("%s is gone; %s go on", gone.name, ", ".join(c.name for c in others))
                return False
        return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Until asked to stop (or the duration is over): report children that exit."""
        deadline = None if self.config.duration is None else time.monotonic() + self.config.duration
        exits = {asyncio.create_task(child.wait()): child for child in self.children}
        stopped = asyncio.create_task(stop.wait())
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(
                    {stopped, *exits}, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                if stopped in done:
                    logger.info("stop requested")
                    return
                if not done:
                    logger.info("duration of %.1fs is over", self.config.duration)
                    return
                for task in done:
                    child = exits.pop(task)
                    self.report_exit(child)
                    self.failed = True
                    if self._essential(child):
                        logger.error("%s is essential: stopping the cell", child.name)
                        return
                    self.show()
        finally:
            stopped.cancel()
            for task in exits:
                task.cancel()


async def run_cell(config: CellConfig, display: Display, state: CellState | None = None) -> int:
    """Run the cell until SIGINT/SIGTERM/SIGHUP, the duration, an essential child's
    death, or until nobody reads its output.

    Returns the exit status: 0 when it ran until asked to stop, 1 when any
    child exited unexpectedly (each such exit is logged and shown).
    """
    config.log_dir.mkdir(parents=True, exist_ok=True)
    state = state or CellState(sensor_ids=config.sensor_ids, controller_ids=config.controller_names)
    stop = asyncio.Event()
    cell = _Cell(config, state, display, stop)
    loop = asyncio.get_running_loop()
    # Under nohup SIGHUP is ignored, and must stay so: the cell outlives the terminal.
    signals = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    refresh = asyncio.create_task(cell.refresh())
    try:
        try:
            code = await cell.run(stop)
        finally:
            # Children must not outlive us, whatever happened above.
            await cell.stop_all(before_controllers=cell.last_look)
            await cell.stop_following()
            state.phase = "stopped"
    finally:
        refresh.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresh
        for signum in signals:
            loop.remove_signal_handler(signum)
        for child in cell.children:
            child.close_log()
        cell.close_display()
    return code
