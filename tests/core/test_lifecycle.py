"""The lifecycle table, exhaustively: every (state, event) pair is legal or raises."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sergeant.errors import IllegalTransition
from sergeant.lifecycle import (
    EVENT_TYPES,
    TERMINAL,
    TRANSITIONS,
    Delivered,
    Event,
    TaskState,
    advance,
    initial_state,
)
from sergeant.task import Task

TASK = Task(kwargs={"n": 1}, queue="q")
PAIRS = list(itertools.product(TaskState, EVENT_TYPES))


def _event(event_type: type[Event]) -> Event:
    return event_type(TASK)


@pytest.mark.parametrize(
    ("state", "event_type"), PAIRS, ids=[f"{s.name}-{e.__name__}" for s, e in PAIRS]
)
def test_every_pair_follows_the_table(
    state: TaskState, event_type: type[Event]
) -> None:
    """A legal pair yields the table's next state; an illegal one raises."""
    expected = TRANSITIONS.get((state, event_type))

    if expected is None:
        with pytest.raises(IllegalTransition, match=event_type.__name__):
            advance(state, _event(event_type))
    else:
        assert advance(state, _event(event_type)) is expected


def test_terminal_states_have_no_way_out() -> None:
    """No transition leaves SUCCEEDED, DROPPED or DEAD."""
    leaving = [(s, e) for (s, e) in TRANSITIONS if s in TERMINAL]

    assert leaving == []


def test_every_state_is_reachable_from_queued() -> None:
    """Every state can be reached from QUEUED or DELAYED through the table."""
    reached = {TaskState.QUEUED, TaskState.DELAYED}
    frontier = set(reached)
    while frontier:
        frontier = {
            nxt for (s, _), nxt in TRANSITIONS.items() if s in frontier
        } - reached
        reached |= frontier

    assert reached == set(TaskState)


def test_every_non_terminal_state_can_end() -> None:
    """From every state some path leads to a terminal state (no trap states)."""
    can_end = set(TERMINAL)
    changed = True
    while changed:
        changed = False
        for (state, _), nxt in TRANSITIONS.items():
            if nxt in can_end and state not in can_end:
                can_end.add(state)
                changed = True

    assert can_end == set(TaskState)


def test_an_illegal_event_leaves_the_state_alone() -> None:
    """A rejected event raises and the caller's state is unchanged (h11 rule 2)."""
    state = TaskState.SUCCEEDED

    with pytest.raises(IllegalTransition):
        state = advance(state, Delivered(TASK))

    assert state is TaskState.SUCCEEDED


def test_initial_state_depends_on_eta() -> None:
    """A task with an eta ahead starts DELAYED, otherwise QUEUED."""
    now = 100.0

    assert initial_state(Task(eta=150.0), now=now) is TaskState.DELAYED
    assert initial_state(Task(eta=50.0), now=now) is TaskState.QUEUED
    assert initial_state(Task(), now=now) is TaskState.QUEUED


@given(st.lists(st.sampled_from(EVENT_TYPES), max_size=30))
def test_random_event_sequences_never_reach_an_illegal_state(
    events: list[type[Event]],
) -> None:
    """Applying random events only ever moves along table edges or raises."""
    state = TaskState.QUEUED
    for event_type in events:
        try:
            nxt = advance(state, _event(event_type))
        except IllegalTransition:
            assert (state, event_type) not in TRANSITIONS
            continue
        assert TRANSITIONS[(state, event_type)] is nxt
        assert nxt in TaskState
        state = nxt
