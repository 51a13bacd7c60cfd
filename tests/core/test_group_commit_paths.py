"""GroupCommit's own paths, on a batch writer of the test's: the uncontended write (its caller's
batch of one, written in its own thread), the writes queued behind it (taken by the next batch,
led by one of them), and an error of either reaching exactly the callers of its batch."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from sessionkeeper.groupcommit import GroupCommit
from sessionkeeper.session import Session

WAIT_S = 10  # a bound on every wait, so a broken group commit fails instead of hanging


class Batches:
    """The batch writer: records each batch (and the thread that wrote it); the first batch
    waits for ``release`` once ``hold()`` was called; ``fail`` makes batches raise it (the next
    one only, with ``fail_once``)."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.threads: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail: BaseException | None = None
        self.fail_once = False  # only the next batch raises ``fail``
        self.refuse: set[str] = set()  # sessions the writer leaves unwritten
        self._held = False

    def hold(self) -> None:
        self._held = True

    def __call__(self, sessions: list[Session]) -> list[Session]:
        if self._held:
            self._held = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        self.threads.append(threading.get_ident())
        if self.fail is not None:
            error = self.fail
            if self.fail_once:
                self.fail = None
            raise error
        self.written.append([cast(Any, s).name for s in sessions])
        return [s for s in sessions if cast(Any, s).name not in self.refuse]


class _S:
    def __init__(self, name: str) -> None:
        self.name = name


def _session(name: str) -> Session:
    return cast(Session, _S(name))


def _held_then_queued(
    group: GroupCommit, batches: Batches, names: list[str]
) -> tuple[dict[str, object], list[threading.Thread]]:
    """``names[0]`` writes alone and is held in the writer while the others queue behind it;
    returns what each caller got (its result or the exception it raised) and the threads, the
    held write still held."""
    got: dict[str, object] = {}

    def write(name: str, session: Session) -> None:
        try:
            got[name] = group.write(session)
        except BaseException as exc:
            got[name] = exc

    sessions = {n: _session(n) for n in names}
    batches.hold()
    first = threading.Thread(target=write, args=(names[0], sessions[names[0]]))
    first.start()
    assert batches.entered.wait(WAIT_S)
    others = [threading.Thread(target=write, args=(n, sessions[n])) for n in names[1:]]
    for t in others:
        t.start()
    assert group.wait_queued(len(names) - 1, WAIT_S)
    return got, [first, *others]


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive()


def test_an_uncontended_write_is_written_by_its_own_thread() -> None:
    batches = Batches()
    group = GroupCommit(batches)
    assert group.write(_session("a")) is True
    batches.refuse = {"b"}
    assert group.write(_session("b")) is False  # not written: answered so, not raised
    assert batches.written == [["a"], ["b"]]
    assert batches.threads == [threading.get_ident()] * 2  # no hand-off to another thread
    assert group.batches == 2 and group.queued == 0


def test_an_error_of_a_lone_write_is_raised_and_the_next_write_goes_through() -> None:
    batches = Batches()
    group = GroupCommit(batches)
    batches.fail = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        group.write(_session("a"))
    batches.fail = None
    assert group.write(_session("b")) is True  # not left busy by the failed batch
    assert batches.written == [["b"]]


def test_writes_arriving_during_a_write_are_taken_by_the_next_batch() -> None:
    batches = Batches()
    group = GroupCommit(batches)
    names = ["a", "b", "c", "d"]
    got, threads = _held_then_queued(group, batches, names)
    assert got == {}  # nobody answered while the write in flight is held
    batches.release.set()
    _join(threads)
    assert batches.written[0] == ["a"]
    assert sorted(batches.written[1]) == ["b", "c", "d"]  # one batch, led by one of them
    assert len(batches.written) == 2
    assert got == dict.fromkeys(names, True)
    assert group.batches == 2 and group.queued == 0


def test_an_error_of_the_next_batch_reaches_each_of_its_callers_only() -> None:
    batches = Batches()
    group = GroupCommit(batches)
    names = ["a", "b", "c", "d"]
    got, threads = _held_then_queued(group, batches, names)
    error = RuntimeError("the store's driver broke")
    batches.fail = error
    batches.release.set()
    _join(threads)
    # The held write fails alone; the batch queued behind it fails, and every caller of that
    # batch, its leader and each follower, gets its error.
    assert all(got[n] is error for n in names)
    batches.fail = None
    assert group.write(_session("e")) is True
    assert batches.written == [["e"]]


def test_a_failed_held_write_does_not_fail_the_batch_behind_it() -> None:
    batches = Batches()
    group = GroupCommit(batches)
    names = ["a", "b", "c"]
    got, threads = _held_then_queued(group, batches, names)
    batches.fail, batches.fail_once = RuntimeError("only the first"), True
    batches.release.set()
    _join(threads)
    assert isinstance(got["a"], RuntimeError)
    assert got["b"] is True and got["c"] is True
    assert len(batches.written) == 1 and sorted(batches.written[0]) == ["b", "c"]


def test_two_requests_of_one_session_in_one_batch_write_it_once() -> None:
    batches = Batches()
    group = GroupCommit(batches)
    shared = _session("s")
    got: list[bool] = []
    batches.hold()
    first = threading.Thread(target=lambda: got.append(group.write(_session("a"))))
    first.start()
    assert batches.entered.wait(WAIT_S)
    twice = [threading.Thread(target=lambda: got.append(group.write(shared))) for _ in range(2)]
    for t in twice:
        t.start()
    assert group.wait_queued(2, WAIT_S)
    batches.release.set()
    _join([first, *twice])
    assert batches.written == [["a"], ["s"]]
    assert got == [True, True, True]
