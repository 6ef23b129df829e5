"""The supervisor's decisions, with no process and no sshd: ended, lost, restarted, given up."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from heron_remote import RestartPolicy, Settings, WorkerError, WorkerExitedError, WorkerLostError
from heron_remote.com.stats import ComStats
from heron_remote.com.supervisor import Supervisor, WorkerSpec
from heron_remote.errors import AuthenticationError, HostUnreachableError, WorkerStartError
from heron_remote.launcher import WorkerLauncher

SPEC = WorkerSpec(
    worker_exec="w.py",
    node_name="cam",
    node_id="cam",
    host=None,
    port=0,
    parameters_topic="Parameters##cam##0",
    num_sending_topics=1,
    outputs=1,
    relic_dir="_",
)


class _Worker(WorkerLauncher):
    """A launcher whose worker's state the test sets."""

    def __init__(self) -> None:
        super().__init__("w.py", node_name="cam")
        self.code: int | None = None
        self.abandoned = self.stopped = False

    def _python(self) -> list[str]:
        return ["python"]

    def _spawn(self, argv: list[str]) -> None:
        pass

    def returncode(self) -> int | None:
        return self.code

    def _signal_group(self, sig: Any) -> bool:
        return False

    def abandon(self) -> None:
        self.abandoned = True

    def stop(self, grace: float = 3.0) -> int | None:
        self.stopped = True
        return self.code


class _Sockets:
    def __init__(self) -> None:
        self.disconnects = 0

    def disconnect_worker(self) -> None:
        self.disconnects += 1


class _Supervisor(Supervisor):
    """Launches are scripted: each is the next outcome, an exception or None (it started)."""

    def __init__(self, settings: Settings, outcomes: list[BaseException | None]) -> None:
        self.errors: list[WorkerError] = []
        super().__init__(SPEC, settings, ComStats(), on_error=self.errors.append)
        self.outcomes = outcomes
        self.launches = 0
        self.sockets = _Sockets()
        self.attach(self.sockets, None)  # type: ignore[arg-type]

    def launch(self) -> None:
        self.launches += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.launcher = _Worker()


def _settings(**restart: Any) -> Settings:
    policy = RestartPolicy(backoff=0.0, reach_timeout=0.3, **restart) if restart else RestartPolicy()
    return Settings(heartbeat_rate=0.05, heartbeats_to_death=2, restart=policy)


def _running(settings: Settings, outcomes: list[BaseException | None] | None = None) -> _Supervisor:
    sup = _Supervisor(settings, outcomes or [])
    sup.launch()
    sup.heard()
    return sup


def test_a_worker_that_finishes_is_not_an_error() -> None:
    sup = _running(_settings())
    sup.launcher.code = 0  # type: ignore[union-attr]
    drained = []
    assert sup.ended(drain=lambda: drained.append(1))
    assert drained == [1] and sup.error is None and sup.errors == []


def test_a_worker_that_fails_is_reported_with_its_status() -> None:
    sup = _running(_settings())
    sup.launcher.code = 3  # type: ignore[union-attr]
    assert sup.ended(drain=lambda: None)
    assert isinstance(sup.error, WorkerExitedError) and sup.error.returncode == 3
    assert sup.errors == [sup.error] and sup.launcher.stopped  # type: ignore[union-attr]


def test_a_silent_worker_is_lost_and_abandoned_after_the_death_window_and_a_beat() -> None:
    sup = _running(_settings())
    assert not sup.ended(drain=lambda: None)  # just heard
    threading.Event().wait(sup.lost_after + 0.05)
    assert sup.ended(drain=lambda: None)
    assert isinstance(sup.error, WorkerLostError) and sup.launcher.abandoned  # type: ignore[union-attr]
    assert sup.stats.state == "lost"


def test_no_restart_unless_the_policy_says_so() -> None:
    sup = _running(_settings())
    assert not sup.relaunch(lambda: None, lambda: None)
    assert sup.launches == 1 and sup.stats.restarts == 0


def test_restarts_go_on_through_failed_launches_until_they_are_used_up() -> None:
    failed = WorkerStartError("it did not start", node="cam")
    sup = _running(_settings(mode="on-failure", max_restarts=3), [None, failed, failed, failed])
    marks: list[str] = []
    assert not sup.relaunch(lambda: marks.append("restarting"), lambda: marks.append("launch"))
    assert sup.stats.restarts == 3 and sup.launches == 4 and sup.errors == [failed] * 3
    assert marks == ["restarting", "launch"] * 3 and sup.sockets.disconnects == 3


def test_a_restart_that_starts_clears_the_error() -> None:
    sup = _running(_settings(mode="on-failure", max_restarts=3))
    sup.launcher.code = 1  # type: ignore[union-attr]
    sup.ended(drain=lambda: None)
    assert sup.error is not None
    assert sup.relaunch(lambda: None, lambda: None)
    assert sup.error is None and sup.stats.restarts == 1


def test_an_unreachable_host_is_tried_again_until_reach_timeout_without_using_restarts() -> None:
    down = HostUnreachableError("no answer from pc")
    sup = _running(_settings(mode="on-failure", max_restarts=1), [None, down, None])
    assert sup.relaunch(lambda: None, lambda: None)
    assert sup.launches == 3 and sup.stats.restarts == 1  # one restart, two attempts at reaching the PC


@pytest.mark.parametrize("error", [AuthenticationError("refused"), HostUnreachableError("gone for good")])
def test_a_refused_login_or_a_host_gone_past_reach_timeout_gives_up(error: Exception) -> None:
    outcomes: list[BaseException | None] = [None] + [error] * 10
    sup = _running(_settings(mode="on-failure", max_restarts=5), outcomes)
    assert not sup.relaunch(lambda: None, lambda: None)
    assert sup.stats.restarts == 1 and "gave up restarting" in (sup.stats.last_error or "")


def test_a_stop_during_the_back_off_ends_the_restarts() -> None:
    sup = _running(Settings(restart=RestartPolicy(mode="on-failure", backoff=5.0)))
    threading.Timer(0.1, sup.stop, args=(0.1,)).start()
    assert not sup.relaunch(lambda: None, lambda: None)
    assert sup.launches == 1
