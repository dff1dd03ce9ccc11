"""A stop of Rhone Local is bounded as a whole (docs/architecture.md, "Stopping"): the background threads share one
wait instead of each getting its own, the engine supervisor starts nothing once a stop began, and the engines stop
together. Time is never measured here: threads that never end and a clock that only the joins move show how long a
stop would wait; a barrier shows that engines stop at once."""

from __future__ import annotations

import threading

import pytest

from rhone_local import engines as engines_module
from rhone_local import reconciler as reconciler_module
from rhone_local import workers as workers_module
from rhone_local.engines import Engines, Lane
from rhone_local.notify import ChangeNotifier
from rhone_local.reconciler import Reconciler
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

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def join(self, timeout: float | None = None) -> None:
        assert timeout is not None and timeout >= 0, "a stop must never wait without a bound"
        self.clock.waits.append(timeout)
        self.clock.now += timeout

    def is_alive(self) -> bool:
        return True


def test_workers_share_one_wait_however_many_threads_are_stuck(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(workers_module.time, "monotonic", clock.monotonic)
    workers = Workers(store=None, notifier=ChangeNotifier())
    workers._threads = [StuckThread(clock) for _ in range(8)]

    workers.stop(timeout=5.0)

    assert workers._stop.is_set()
    assert sum(clock.waits) == 5.0, clock.waits  # one 5 s wait in all, not 5 s for each of the 8
    assert clock.waits[0] == 5.0 and set(clock.waits[1:]) == {0.0}


def test_the_reconciler_and_its_healing_threads_share_one_wait(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(reconciler_module.time, "monotonic", clock.monotonic)

    class Pipeline:
        runner = None

    reconciler = Reconciler(store=None, pipeline=Pipeline())
    reconciler._thread = StuckThread(clock)
    reconciler._healing = {f"env_{i}": StuckThread(clock) for i in range(3)}

    reconciler.stop(timeout=5.0)

    assert reconciler._stop.is_set()
    assert sum(clock.waits) == 5.0, clock.waits


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
    monkeypatch.setattr(engines_module, "ENGINE_TYPES", {"redis": lambda lane, directory, key: lane})
    monkeypatch.setattr(Engines, "key", b"k" * 32)
    supervised: list[Lane] = []

    def supervise(engine):
        supervised.append(engine)
        engines.stop_supervising()  # the server began to stop while this lane's engine was starting

    monkeypatch.setattr(engines, "_supervise", supervise)
    engines.tick()

    assert len(supervised) == 1, supervised  # the start under way finished; no other lane's began


@pytest.mark.parametrize("stuck", ["workers", "reconciler", "retention"])
def test_a_server_stop_gives_its_background_threads_one_shared_wait(monkeypatch, stuck):
    """ControlPlane.stop: however the threads are stuck, the three stops together wait STOP_THREADS_SECONDS."""
    from rhone_local import server

    clock = Clock()
    monkeypatch.setattr(server.time, "monotonic", clock.monotonic)
    given: dict[str, float] = {}

    class Part:
        def __init__(self, name: str) -> None:
            self.name = name

        def stop(self, timeout: float) -> None:
            given[self.name] = timeout
            if self.name == stuck:
                clock.now += timeout  # it used all it was given

    class Runner:
        closing = threading.Event()
        runs_processes = False

        def stop_all(self, reason: str) -> None:
            pass

    class Engines:
        supervising = True

        def stop_supervising(self) -> None:
            self.supervising = False

        def stop_all(self) -> None:
            assert not self.supervising

    class Pipeline:
        engines = Engines()
        runner = Runner()

    plane = server.ControlPlane.__new__(server.ControlPlane)
    plane.pipeline, plane.membership = Pipeline(), None
    plane.reconciler, plane.workers, plane.retention = Part("reconciler"), Part("workers"), Part("retention")

    plane.stop()

    assert plane.runner.closing.is_set() and not plane.pipeline.engines.supervising
    order = ["reconciler", "workers", "retention"]
    used = given[stuck]
    assert used == server.STOP_THREADS_SECONDS
    # The parts after the stuck one get what is left of the shared wait: nothing.
    assert all(given[name] == 0.0 for name in order[order.index(stuck) + 1 :]), given
    assert clock.now - 1000.0 == server.STOP_THREADS_SECONDS
