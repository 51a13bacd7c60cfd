"""A model-checked lifecycle (issue 9): a hypothesis state machine that drives three nodes
(``SessionManager`` "a", "b", "c", ``housekeeping=False``, one ``FakeClock``) on one store through
the public API, and keeps a model of what each client (a cookie jar) was acknowledged.

The model of one client: ``base``, the session as it was when the store last held everything
acknowledged (``None``: not stored), and ``ops``, every acknowledged change since, each with the
session's whole data after it. What the store holds must be ``base`` or the data after one of the
``ops`` (a store never holds a state no request saw); the ops after it are what a crash would lose,
which the policy bounds (:func:`loss_allowed`). Key ``x`` is set when a session is created and
never deleted, so an empty session is one that does not exist.

Nodes route stickily under the deferred policies (the id's node, while it lives) and anywhere
under EndOfRequest and OnAttribute. ``outage_backoff_s=0``: ``Store.failing()`` reads the real
monotonic clock (issue 9 defect 7), which would make the runs depend on how fast they are.

Used by ``test_lifecycle_model.py`` (MemoryStore, SQLite) and the server tests; ``Case`` says which
policy, which store (a :class:`~tests.core.lifecycle_stores.Plumbing` factory) and which faults.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import sessionkeeper as sk
from sessionkeeper.errors import StoreError
from sessionkeeper.events import DestroyReason, SessionEvent, SessionListener
from sessionkeeper.session import Session

from .lifecycle_stores import Plumbing

APP = "shop"
NODES = ("a", "b", "c")
TIMEOUT_S = 10_000.0  # small clock steps never expire a session; the long one always does
SMALL_STEPS_S = (0.5, 1.0, 5.0, 11.0, 61.0)  # across TimeBased's 10 s and save_period_s's 60 s
LONG_STEP_S = 3 * TIMEOUT_S
FLUSH_POLL_S = 1.0


@dataclass(frozen=True)
class Case:
    policy: sk.WritePolicy
    plumbing: Callable[[], Plumbing]
    contents: str = "updated"
    outages: bool = True
    #: Known defects (see :data:`DEFECTS`) this case steps around, so that it checks the rest.
    skip: frozenset[str] = frozenset()

    @property
    def deferred(self) -> bool:
        return self.policy.deferred


#: What today's code gets wrong, as the machine found it (test_lifecycle_found.py), and what a
#: case that skips it does instead.
DEFECTS: dict[str, str] = {}


@dataclass
class Op:
    state: dict[str, Any]  # the session's data after this change
    updates: int  # sets, deletes and mark_modified() calls it made (what AfterUpdates counts)
    request: int
    at: float


@dataclass
class Client:
    cookie: str | None = None
    base: dict[str, Any] | None = None
    ops: list[Op] = field(default_factory=list)
    served_by: tuple[str, int] | None = None  # (node, incarnation) of its last request
    tainted: bool = False  # an outage held writes back: the policy's window does not apply

    @property
    def state(self) -> dict[str, Any]:
        if self.ops:
            return self.ops[-1].state
        return self.base or {}

    @property
    def token(self) -> str | None:
        return self.cookie.rsplit(".", 1)[0] if self.cookie else None

    def forget(self) -> None:
        self.cookie, self.base, self.ops, self.tainted = None, None, [], False


def loss_allowed(policy: sk.WritePolicy, lost: list[Op], now: float) -> bool:
    """Whether a crash losing ``lost`` is within the policy's window, ``policy.max_loss()``; the
    clock steps poll every node, so the window adds no ``flush_poll_s``."""
    if not lost:
        return True
    loss = policy.max_loss(flush_poll_s=0.0)
    if loss.nothing:
        return False  # EndOfRequest, OnAttribute: nothing acknowledged may be lost
    return (
        all(now - op.at <= loss.seconds for op in lost)
        and sum(op.updates for op in lost) <= loss.updates
        and len({op.request for op in lost}) <= loss.requests
    )


def plain(data: Any) -> Any:
    """A deep, comparable copy of session data (what a client could have been shown)."""
    return json.loads(json.dumps(dict(data), sort_keys=True))


class Destroyed(SessionListener):
    def __init__(self, log: list[tuple[str, str, DestroyReason | None]]) -> None:
        self.log = log

    def session_destroyed(self, event: SessionEvent) -> None:
        self.log.append((event.app, event.token, event.reason))


class RequestFailed(Exception):
    """The request was not acknowledged (the manager raised): the model keeps what it had."""


class LifecycleMachine(RuleBasedStateMachine):
    case: Case  # set by make_machine()

    def __init__(self) -> None:
        super().__init__()
        self.plumbing = self.case.plumbing()
        self.clock = sk.FakeClock()
        self.contents = "updated"
        self.nodes: dict[str, sk.SessionManager | None] = dict.fromkeys(NODES)
        self.incarnation: Counter[str] = Counter()
        self.seen: dict[str, list[Session]] = {n: [] for n in NODES}
        self.clients = [Client() for _ in range(3)]
        self.dead: dict[str, tuple[float, str]] = {}  # dead token -> when, and by which node
        self.polled_at: float = float("-inf")  # the clock time every live node last polled
        self.destroyed: list[tuple[str, str, DestroyReason | None]] = []
        self.retired_stats: Counter[str] = Counter()  # counters of managers gone
        self.ended_at: dict[tuple[str, int], float] = {}  # (node, incarnation) -> crash or close
        self.expect: Counter[str] = Counter()  # what the counters must say
        self.requests = 0
        self.value = 0

    def teardown(self) -> None:
        self.plumbing.switch.down = False
        for m in self.nodes.values():
            if m is not None:
                m.close(deadline_s=0)
        self.plumbing.cleanup()

    # -- plumbing ----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        m = sk.SessionManager(
            self.plumbing.open_store(),
            node=name,
            write=self.case.policy,
            contents=self.contents,  # type: ignore[arg-type]
            timeout_s=TIMEOUT_S,
            clock=self.clock,
            housekeeping=False,
            outage_backoff_s=0.0,
            flush_poll_s=FLUSH_POLL_S,
        )
        m.add_listener(Destroyed(self.destroyed))
        self.nodes[name] = m
        self.incarnation[name] += 1
        self.seen[name] = []

    def drop(self, name: str) -> None:
        m = self.nodes[name]
        assert m is not None
        for key, value in m.stats().items():
            if isinstance(value, int):
                self.retired_stats[key] += value
        self.nodes[name] = None
        self.seen[name] = []
        self.ended_at[(name, self.incarnation[name])] = self.clock.time()

    def live(self) -> list[str]:
        return [n for n, m in self.nodes.items() if m is not None]

    def next_value(self) -> int:
        self.value += 1
        return self.value

    def stored(self, token: str) -> dict[str, Any] | None:
        got = self.plumbing.observer.peek(APP, token)
        if got is None:
            return None
        return {k: json.loads(v) for k, v in got.attributes.items()}

    def route(self, c: Client, drawn: str) -> str | None:
        """The node a load balancer sends ``c`` to: its id's node while that lives (sticky,
        always under the deferred policies), otherwise the drawn one or any live node."""
        live = self.live()
        if not live:
            return None
        home = c.cookie.rsplit(".", 1)[1] if c.cookie else None
        if self.case.deferred and home in live:
            return home
        return drawn if drawn in live else live[0]

    @contextmanager
    def serve(self, c: Client, name: str, session_id: str | None) -> Iterator[Session]:
        """One request of ``c`` on node ``name``; checks what it is shown against the model
        first. Raises :class:`RequestFailed` when the manager refused or failed it."""
        m = self.nodes[name]
        assert m is not None
        self.requests += 1
        try:
            with m.request(app=APP, session_id=session_id) as s:
                self.seen[name].append(s)
                self.check_shown(c, name, plain(s))
                yield s
        except StoreError as exc:
            raise RequestFailed(str(exc)) from exc

    def check_shown(self, c: Client, name: str, shown: dict[str, Any]) -> None:
        expected = c.state if c.token not in self.dead else {}
        if shown == expected:
            return
        failover = c.served_by != (name, self.incarnation[name])
        assert failover, f"node {name} showed {shown}, the client was acknowledged {expected}"
        lost = self.lost(c, shown or None)
        assert lost is not None, f"failover to {name} showed {shown}: never acknowledged"
        assert c.tainted or loss_allowed(self.case.policy, lost, self.loss_time(c)), (
            f"failover to {name} lost {[op.state for op in lost]} under {self.case.policy}"
        )
        c.base, c.ops, c.tainted = (shown or None), [], False

    def loss_time(self, c: Client) -> float:
        """When what ``c`` lost became final: the crash (or stop) of the node that served it
        last, or now while that node lives."""
        return self.ended_at.get(c.served_by or ("", 0), self.clock.time())

    def lost(self, c: Client, held: dict[str, Any] | None) -> list[Op] | None:
        """The acknowledged changes missing when ``held`` is stored; ``None`` if ``held`` is no
        state the client was acknowledged."""
        for i in range(len(c.ops), 0, -1):
            if c.ops[i - 1].state == held:
                return c.ops[i:]
        if (c.base or None) == (held or None):
            return list(c.ops)
        return None

    def record(self, c: Client, s: Session, updates: int) -> None:
        c.ops.append(Op(plain(s), updates, self.requests, self.clock.time()))

    # -- rules: setup ------------------------------------------------------------------------

    @initialize()
    def boot(self) -> None:
        self.contents = self.case.contents
        for name in NODES:
            self.start(name)

    # -- rules: requests ---------------------------------------------------------------------

    @rule(
        i=st.integers(0, 2),
        node=st.sampled_from(NODES),
        actions=st.lists(
            st.sampled_from(["set_y", "set_z", "del_y", "del_z", "read", "append", "sync"]),
            max_size=4,
        ),
    )
    def request(self, i: int, node: str, actions: list[str]) -> None:
        c = self.clients[i]
        name = self.route(c, node)
        if name is None:
            return
        before = (c.base, list(c.ops), c.cookie)
        try:
            with self.serve(c, name, c.cookie) as s:
                if not s:
                    if not actions:
                        return  # a request that writes nothing creates nothing
                    c.forget()
                    s["x"] = self.next_value()
                    self.expect["created"] += 1
                    self.record(c, s, 1)
                for action in actions:
                    self.act(c, s, action)
                cookie = s.id
        except RequestFailed:
            c.base, c.ops, c.cookie = before
            c.tainted = True
            return
        c.cookie, c.served_by = cookie, (name, self.incarnation[name])
        if self.plumbing.switch.down:
            c.tainted = True

    def act(self, c: Client, s: Session, action: str) -> None:
        if action.startswith("set_"):
            s[action[4:]] = self.next_value()
            self.record(c, s, 1)
        elif action.startswith("del_"):
            if action[4:] in s:
                del s[action[4:]]
                self.record(c, s, 1)
        elif action == "read":
            assert plain({"y": s.get("y")}) == {"y": c.state.get("y")}
        elif action == "append":
            lst = s.get("lst")
            if isinstance(lst, list):
                lst.append(self.next_value())  # in place
                if self.contents != "accessed":
                    s.mark_modified()  # "updated" and "all" are told; "accessed" finds out
                self.record(c, s, 0)  # not a set or delete: AfterUpdates does not count it
            else:
                s["lst"] = [self.next_value()]
                self.record(c, s, 1)
        elif action == "sync":
            s.sync()

    @rule(i=st.integers(0, 2), node=st.sampled_from(NODES))
    def invalidate(self, i: int, node: str) -> None:
        c = self.clients[i]
        name = self.route(c, node)
        if name is None or c.cookie is None:
            return
        token = c.token
        try:
            with self.serve(c, name, c.cookie) as s:
                existed = bool(s)
                s.invalidate()
        except RequestFailed:
            c.tainted = True
            return
        if existed:
            assert token is not None
            self.dead[token] = (self.clock.time(), name)
            self.expect["invalidated"] += 1
            self.expect["destroyed_invalidated"] += 1
        c.forget()

    @rule(i=st.integers(0, 2), node=st.sampled_from(NODES))
    def rotate(self, i: int, node: str) -> None:
        c = self.clients[i]
        name = self.route(c, node)
        if name is None or c.cookie is None or not c.state or c.token in self.dead:
            return
        token = c.token
        try:
            with self.serve(c, name, c.cookie) as s:
                if not s:
                    return
                s.rotate_id()
                cookie = s.id
        except RequestFailed:
            c.tainted = True
            return
        assert token is not None
        self.dead[token] = (self.clock.time(), name)
        c.cookie, c.served_by = cookie, (name, self.incarnation[name])

    @rule(i=st.integers(0, 2), first=st.booleans())
    @precondition(lambda self: len(self.live()) >= 2 and not self.plumbing.switch.down)
    def two_nodes_two_keys(self, i: int, first: bool) -> None:
        """One session changed on two nodes at once, a different key on each: after both nodes
        wrote, the store has both (the version-checked, key-by-key merge)."""
        c = self.clients[i]
        if not c.state or c.token in self.dead:
            return
        a = self.route(c, "a")
        assert a is not None
        b = next(n for n in self.live() if n != a)
        ma, mb = self.nodes[a], self.nodes[b]
        assert ma is not None and mb is not None
        if self.case.deferred:
            ma.flush()  # what b loads must hold a's changes: deferred policies need stickiness
        if self.stored(c.token or "") is None:
            return  # lost to an outage and a crash: nothing for b to load
        va, vb = self.next_value(), self.next_value()
        outer = self.serve(c, a, c.cookie)
        sa = outer.__enter__()
        inner = self.serve(c, b, c.cookie)
        sb = inner.__enter__()
        sa["y"], sb["z"] = va, vb
        ended = [(outer, sa, ma, a), (inner, sb, mb, b)]
        if not first:
            ended.reverse()
        for ctx, _, _, _ in ended:
            ctx.__exit__(None, None, None)
        for _, _, m, _ in ended:
            m.flush()
        held = self.stored(c.token or "")
        assert held is not None and held.get("y") == va and held.get("z") == vb, (
            f"y={va} on {a} and z={vb} on {b}: the store has {held}"
        )
        # Only the copy of the node that wrote last is current (OnAttribute: b, whichever ended
        # last), so the client's next request, as a non-sticky balancer would send it, names
        # the other node: the node it reaches reloads the session from the store.
        state = {**c.state, "y": va, "z": vb}
        c.base, c.ops = state, []
        (_, _, _, other), (_, _, _, name) = ended
        with self.serve(c, name, f"{c.token}.{other}") as s:
            assert plain(s) == state, f"after both wrote, {name} shows {plain(s)}"
            cookie = s.id
        c.cookie, c.served_by = cookie, (name, self.incarnation[name])

    @rule(node=st.sampled_from(NODES), which=st.integers(0, 10))
    def present_dead_id(self, node: str, which: int) -> None:
        """An invalidated or rotated-away id never yields data again, on any node, once the
        node polled (the tombstone feed ends cached copies within ``flush_poll_s``)."""
        m = self.nodes[node]
        if m is None or not self.dead:
            return
        token, (died, _by) = sorted(self.dead.items())[which % len(self.dead)]
        for suffix in NODES:
            try:
                with m.request(app=APP, session_id=f"{token}.{suffix}") as s:
                    shown = plain(s)
            except StoreError:
                continue
            if self.polled_at >= died + FLUSH_POLL_S:
                assert shown == {}, f"dead id {token[:8]}.{suffix} yielded {shown} on {node}"

    # -- rules: housekeeping -----------------------------------------------------------------

    @rule(node=st.sampled_from(NODES), op=st.sampled_from(["flush", "sweep", "housekeep"]))
    def maintain(self, node: str, op: str) -> None:
        m = self.nodes[node]
        if m is None:
            return
        try:
            getattr(m, op)()
        except StoreError:
            assert self.plumbing.switch.down, f"{op} failed with the store up"

    @rule(step=st.sampled_from(SMALL_STEPS_S))
    def tick(self, step: float) -> None:
        self.advance(step)

    @rule()
    def long_tick(self) -> None:
        """Past every session's timeout (and the sweep's grace): every session ends."""
        self.advance(LONG_STEP_S)
        for c in self.clients:
            c.forget()

    def advance(self, step: float) -> None:
        """Time passes with each node's housekeeping thread running (one poll at the end of the
        step does what the thread's polls would have done by then)."""
        self.clock.advance(step)
        for name in self.live():
            m = self.nodes[name]
            assert m is not None
            m.housekeep()
        self.polled_at = self.clock.time()

    # -- rules: faults -----------------------------------------------------------------------

    @rule()
    @precondition(lambda self: self.case.outages and not self.plumbing.switch.down)
    def outage_starts(self) -> None:
        self.plumbing.switch.down = True
        for c in self.clients:
            c.tainted = c.tainted or bool(c.ops)

    @rule()
    @precondition(lambda self: self.plumbing.switch.down)
    def outage_ends(self) -> None:
        self.plumbing.switch.down = False

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: str) -> None:
        """The process dies: the manager is dropped, nothing runs (housekeeping is off)."""
        if self.nodes[node] is not None:
            self.drop(node)

    @rule(node=st.sampled_from(NODES))
    def close(self, node: str) -> None:
        """A clean stop: with the store up, every session this node served is then stored."""
        m = self.nodes[node]
        if m is None:
            return
        up = not self.plumbing.switch.down
        this = (node, self.incarnation[node])
        unwritten = m.close(deadline_s=0)
        self.drop(node)
        if up:
            assert unwritten == [], f"close() with the store up left {unwritten}"
            for c in self.clients:
                if c.served_by == this and c.token and c.token not in self.dead and not c.tainted:
                    assert self.lost(c, self.stored(c.token)) == [], (
                        f"after close() of {node} the store lacks {c.state}"
                    )

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: str) -> None:
        if self.nodes[node] is None:
            self.start(node)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def store_holds_what_was_acknowledged(self) -> None:
        """Under EndOfRequest and OnAttribute every acknowledged change is stored; under the
        deferred policies the store is behind by at most the policy's window (what a crash now
        would lose). Either way it holds a state some request acknowledged."""
        for c in self.clients:
            if c.token is None or c.token in self.dead or not (c.ops or c.base):
                continue
            held = self.stored(c.token)
            lost = self.lost(c, held)
            assert lost is not None, f"the store holds {held}, never acknowledged ({c.state})"
            if not lost:
                c.base, c.ops, c.tainted = held, [], False
                continue
            if c.tainted and self.case.deferred:
                continue
            assert loss_allowed(self.case.policy, lost, self.loss_time(c)), (
                f"store has {held}; a crash would lose {[op.state for op in lost]} "
                f"under {self.case.policy}"
            )

    @invariant()
    def no_lock_left_held(self) -> None:
        sessions = [s for name in self.live() for s in self.seen[name]]
        if not sessions:
            return
        held: list[str] = []

        def probe() -> None:  # another thread: an RLock is re-entrant for its holder
            for s in sessions:
                for what in ("lock", "write_lock", "access_lock"):
                    lock = getattr(s, what)
                    if lock.acquire(blocking=False):
                        lock.release()
                    else:
                        held.append(f"{s!r}.{what}")

        t = threading.Thread(target=probe)
        t.start()
        t.join()
        assert held == [], f"locks left held: {held}"

    @invariant()
    def counters_agree(self) -> None:
        total = Counter(self.retired_stats)
        for name in self.live():
            m = self.nodes[name]
            assert m is not None
            for key, value in m.stats().items():
                if isinstance(value, int):
                    total[key] += value
        assert total["created"] == self.expect["created"], (total["created"], self.expect)
        assert total["invalidated"] == self.expect["invalidated"]
        reasons = Counter(reason for _, _, reason in self.destroyed)
        assert reasons[DestroyReason.INVALIDATED] == self.expect["destroyed_invalidated"]
        assert reasons[DestroyReason.TIMED_OUT] == total["timed_out"], (reasons, total)
        fired = Counter((app, token) for app, token, _ in self.destroyed)
        twice = [token[:8] for (_, token), n in fired.items() if n > 1]
        assert twice == [], f"session_destroyed fired more than once for {twice}"


def make_machine(case: Case) -> type[LifecycleMachine]:
    spec = case.policy.spec().replace(":", "_").replace("-", "_")
    return type(
        f"Lifecycle_{spec}_{case.contents}",
        (LifecycleMachine,),
        {"case": case},
    )


def run(case: Case, examples: int, *, steps: int = 30, shrink: bool = True) -> None:
    """Run the machine for ``case``. Cases known to fail skip the shrinking phase: their shrunk
    examples are kept in test_lifecycle_found.py, and shrinking costs a minute each."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    run_state_machine_as_test(
        make_machine(case),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            phases=phases,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
