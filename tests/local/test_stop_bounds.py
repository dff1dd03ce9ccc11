"""A stop of Rhone Local is bounded as a whole (docs/architecture.md, "Stopping"): the background threads are all told
first and share one wait, nothing starts an engine once a stop began (a start under way gives up and stops what it
started), and the engines stop together. Time is never measured here: threads that never end and a clock that only
their joins move show how long a stop would wait; a barrier shows that engines stop at once."""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest

from rhone_local.engines import Engine, Engines, EnginesStopping, EngineUnavailable, Lane, RedisEngine
from rhone_local.notify import ChangeNotifier
from rhone_local.reconciler import Reconciler
from rhone_local.runner import RunnerStopping
from rhone_local.stopping import Deadline, join_all
from rhone_local.workers import Workers


class Clock:
    """Monotonic time that moves only when a stuck thread is joined: by the whole timeout it was given."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now


class StuckThread:
    """A thread that never finishes: each join waits its whole timeout on `clock`."""

    def __init__(self, clock: Clock, name: str = "stuck") -> None:
        self.clock, self.name = clock, name

    def join(self, timeout: float | None = None) -> None:
        assert timeout is not None and timeout >= 0, "a stop must never wait without a bound"
        self.clock.waits.append(timeout)
        self.clock.now += timeout

    def is_alive(self) -> bool:
        return True


class DoneThread(StuckThread):
    def join(self, timeout: float | None = None) -> None:
        assert timeout is not None
        self.clock.waits.append(0.0)  # it had ended: no time passes

    def is_alive(self) -> bool:
        return False


def test_threads_joined_together_wait_once_however_many_are_stuck():
    clock = Clock()
    threads = [StuckThread(clock, f"t{i}") for i in range(8)]
    left = join_all([None, DoneThread(clock), *threads], Deadline(5.0, clock.monotonic))
    assert left == threads
    assert sum(clock.waits) == 5.0 and clock.waits[1] == 5.0, clock.waits  # 5 s in all, not 5 s for each


def test_workers_and_the_reconciler_give_every_thread_of_theirs_to_one_deadline():
    clock = Clock()
    workers = Workers(store=None, notifier=ChangeNotifier())
    workers._threads = [StuckThread(clock) for _ in range(4)]

    class Pipeline:
        runner = None

    reconciler = Reconciler(store=None, pipeline=Pipeline())
    reconciler._thread = StuckThread(clock)
    reconciler._healing = {f"env_{i}": StuckThread(clock) for i in range(3)}

    deadline = Deadline(5.0, clock.monotonic)
    left = workers.join(deadline) + reconciler.join(deadline)
    assert len(left) == 8 and sum(clock.waits) == 5.0, clock.waits


def test_a_server_stop_tells_every_background_thread_first_then_waits_once_for_all(monkeypatch):
    from rhone_local import server

    clock = Clock()
    events: list[str] = []

    class Part:
        def __init__(self, name: str, stuck: bool) -> None:
            self.name, self.thread = name, (StuckThread if stuck else DoneThread)(clock, name)

        def request_stop(self) -> None:
            events.append(f"tell {self.name}")

        def join(self, deadline: Deadline) -> list:
            events.append(f"join {self.name}")
            return join_all([self.thread], deadline)

    class Runner:
        closing = threading.Event()
        runs_processes = False

        def stop_all(self, reason: str) -> None:
            events.append("drain apps")

    class FakeEngines:
        def stop_supervising(self) -> None:
            events.append("engines start nothing")

        def stop_all(self) -> None:
            events.append("stop engines")

    class Pipeline:
        engines = FakeEngines()
        runner = Runner()

    plane = server.ControlPlane.__new__(server.ControlPlane)
    plane.pipeline, plane.membership, plane.clock = Pipeline(), None, clock.monotonic
    plane.reconciler, plane.workers, plane.retention = Part("reconciler", True), Part("workers", True), Part("r", False)
    warned: list[str] = []
    monkeypatch.setattr(server.log, "warning", lambda message, *args: warned.append(message % args))

    plane.stop()

    assert plane.runner.closing.is_set()
    assert events == [
        "engines start nothing",
        "tell reconciler",
        "tell workers",
        "tell r",
        "join reconciler",
        "join workers",
        "join r",
        "drain apps",  # the apps drain before the engines stop: they may write their sessions meanwhile
        "stop engines",
    ]
    assert sum(clock.waits) == server.STOP_THREADS_SECONDS  # the reconciler used it all; the workers got nothing
    assert clock.waits == [server.STOP_THREADS_SECONDS, 0.0, 0.0]
    assert len(warned) == 1 and "['reconciler', 'workers']" in warned[0], warned


class FakeEngine:
    def __init__(self, lane: Lane, barrier: threading.Barrier, stopped: list[str]) -> None:
        self.lane, self.barrier, self.stopped = lane, barrier, stopped
        self.pid = 1

    def stop(self) -> None:
        # Every engine's stop must be under way before any can finish: stopped one after another, the first would
        # wait here for the others and break the barrier.
        self.barrier.wait(timeout=30)
        self.stopped.append(self.lane.engine)


def test_engines_stop_together_not_one_after_another(tmp_path):
    engines = Engines(store=None, data_dir=tmp_path)
    names = ["redis", "nats", "redis-2", "nats-2"]
    barrier = threading.Barrier(len(names))
    stopped: list[str] = []
    for name in names:
        lane = Lane("env_1", "local-1", name)
        engines._engines[lane] = FakeEngine(lane, barrier, stopped)

    engines.stop_all()

    assert not barrier.broken
    assert sorted(stopped) == sorted(names)  # each stopped exactly once
    assert engines._stop.is_set()


def test_the_engine_supervisor_starts_no_further_lane_once_a_stop_began(tmp_path, monkeypatch):
    lanes = [{"environment_id": f"env_{i}", "region_id": "local-1", "provider": "redis"} for i in range(3)]

    class Store:
        def engine_lanes(self):
            return lanes

    engines = Engines(store=Store(), data_dir=tmp_path)
    monkeypatch.setattr("rhone_local.engines.ENGINE_TYPES", {"redis": lambda lane, directory, key, stopping: lane})
    monkeypatch.setattr(Engines, "key", b"k" * 32)
    supervised: list[Lane] = []

    def supervise(engine):
        supervised.append(engine)
        engines.stop_supervising()  # the server began to stop while this lane's engine was starting

    monkeypatch.setattr(engines, "_supervise", supervise)
    engines.tick()

    assert len(supervised) == 1, supervised  # the start under way finished; no other lane's began


def test_an_engine_starts_nothing_once_a_stop_began(tmp_path):
    stopping = threading.Event()
    stopping.set()
    engine = RedisEngine(Lane("env_1", "local-1", "redis"), tmp_path / "redis", b"k" * 32, stopping)
    with pytest.raises(EnginesStopping):
        engine.ensure()
    assert engine.child is None and engine.pid is None and not (tmp_path / "redis").exists()  # nothing spawned


class SlowEngine(Engine):
    """An engine whose process never becomes ready: the stop begins while its start waits."""

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        failure = self._attempt([sys.executable, "-c", "import time; time.sleep(120)"], self._ready)
        raise EngineUnavailable("engine_unavailable", f"did not start: {failure}")

    def _spawn(self, argv: list[str]) -> None:
        super()._spawn(argv)
        self.spawned = self.child  # stopping it forgets `child`

    ready_checks = 0

    def _ready(self) -> bool:
        self.ready_checks += 1
        self.stopping.set()  # the server stops now, in the middle of the start
        return False

    def answers(self) -> bool:
        return False


def test_a_start_under_way_gives_up_when_a_stop_begins_and_stops_what_it_started(tmp_path):
    engine = SlowEngine(Lane("env_1", "local-1", "redis"), tmp_path / "slow", b"k" * 32)
    with pytest.raises(EnginesStopping):  # not EngineUnavailable: a stage that met it resumes, it does not fail
        engine.ensure()
    assert engine.ready_checks == 1  # it gave up at once, not at its start timeout
    assert engine.spawned.poll() is not None  # the process it spawned is gone
    assert engine.pid is None
    assert not (tmp_path / "slow" / "engine.json").exists()  # never recorded as running


def test_a_stage_that_meets_a_stop_is_left_to_resume_not_failed(monkeypatch):
    released: list[str] = []

    class Store:
        def release_operation(self, op_id: str, worker: str) -> None:
            released.append(op_id)

    workers = Workers(store=Store(), notifier=ChangeNotifier())
    monkeypatch.setattr(workers, "_heartbeat", lambda op_id, worker: contextlib.nullcontext())
    crashed: list[str] = []
    monkeypatch.setattr(workers, "_record_crash", lambda op, worker, error: crashed.append(op["id"]))
    for stopping in (EnginesStopping(), RunnerStopping()):

        def step(op, worker, error=stopping):
            raise error

        monkeypatch.setattr(workers, "step", step)
        workers.drive({"id": "op_1", "state": "services"}, "worker-1")

    assert crashed == [] and released == ["op_1", "op_1"]  # each released, neither recorded as a crash


def test_every_engine_kind_shares_the_engines_stop(tmp_path):
    from rhone_local.engines import ENGINE_TYPES

    engines = Engines(store=None, data_dir=tmp_path)
    engines._key = b"k" * 32
    for kind in ENGINE_TYPES:
        engine = engines.engine(Lane("env_1", "local-1", kind))
        assert engine.stopping is engines._stop, kind


def test_a_supervised_start_cut_by_a_stop_is_no_failure(tmp_path):
    engines = Engines(store=None, data_dir=tmp_path)
    engine = SlowEngine(Lane("env_1", "local-1", "redis"), tmp_path / "slow", b"k" * 32, engines._stop)
    engines._supervise(engine)  # the stop begins during the start (SlowEngine._ready)
    assert engine.failures == 0 and engine.error is None and engine.next_try == 0.0  # not counted, no back-off
    assert engine.spawned.poll() is not None
