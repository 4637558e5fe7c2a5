"""A worker's slots: how many tasks to claim, and which waiting task may start.

The numbers here decide whether a worker claims too much (tasks sit in one worker's hands
while another is idle) or too little (a slot stays empty while work is due). No database:
each test states the situation and reads the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sitq.backends.base import ClaimedTask, ClaimRequest
from sitq.engine.pipeline import AHEAD_WHEN_UNDER, Slots


def claimed(task_id: str, *, ahead: bool = False) -> ClaimedTask:
    return ClaimedTask(
        task_id=task_id,
        name="t",
        payload=b"",
        attempt=1,
        tries=1,
        token=1,
        scheduled_for=0.0,
        enqueued_at=0.0,
        claimed_at=0.0,
        ahead=ahead,
    )


class Ticks:
    """A timer that moves `step` seconds at every reading: tasks "take" `step` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Real asyncio tasks standing in for running ones; cancelled at the end."""
    made: list[asyncio.Task[None]] = []
    yield made
    for task in made:
        task.cancel()
    await asyncio.gather(*made, return_exceptions=True)


async def hold() -> None:
    await asyncio.Event().wait()


def start(slots: Slots, tasks: list[asyncio.Task[None]], *task_ids: str) -> None:
    for task_id in task_ids:
        tasks.append(asyncio.create_task(hold()))
        slots.took(claimed(task_id), tasks[-1], 0.0)


async def test_free_slots_count_running_settling_and_a_claim_on_its_way(
    tasks: list[asyncio.Task[None]],
) -> None:
    slots = Slots(4)
    slots.timer = Ticks(1.0)  # long tasks: no claiming ahead
    assert (slots.free_to_run(), slots.free_to_claim()) == (4, 4)
    start(slots, tasks, "a", "b", "c")
    assert (slots.free_to_run(), slots.free_to_claim()) == (1, 1)
    assert slots.ran("a")  # its outcome is on its way (stored before any claim): free again
    assert (slots.free_to_run(), slots.free_to_claim()) == (2, 2)
    assert slots.next_claim() == (2, 0)  # (limit, ahead): two to claim, to start at once
    slots.claiming = ClaimRequest("w", 2, 0.0, 30.0)  # a claim for two is on its way
    assert slots.next_claim() is None  # one claim at a time
    slots.landed([claimed("d")], sent=0.0)
    assert (slots.claiming, slots.dry) == (None, True)  # it found fewer than it asked for
    slots.forget("a")
    assert [t.task_id for t in slots.ahead.waiting] == ["d"]  # in hand, its row held
    assert (slots.free_to_run(), slots.free_to_claim()) == (2, 1)


async def test_the_rows_held_never_pass_twice_the_concurrency(
    tasks: list[asyncio.Task[None]],
) -> None:
    slots = Slots(3)
    slots.timer = Ticks(AHEAD_WHEN_UNDER / 10)  # short tasks: claiming ahead
    start(slots, tasks, "warm")
    slots.ran("warm")
    slots.forget("warm")
    start(slots, tasks, "a", "b", "c")
    assert slots.free_to_claim() == 3  # all slots run: room for three in hand
    slots.ran("a")
    slots.ran("b")  # two outcomes on their way: stored before the next claim's rows
    assert slots.free_to_claim() == 5
    assert slots.starting_at_once(5) == 2  # two slots are free: the other three wait
    slots.ahead.hold([claimed(f"x{i}", ahead=True) for i in range(3)])
    assert slots.free_to_claim() == 2  # 1 running + 3 waiting + 2 = 6
    tasks.append(asyncio.create_task(hold()))
    # sent back unstarted: its row counts until stored
    slots.took(claimed("x9"), tasks[-1], 0.0, unrun=True)
    assert (slots.free_to_run(), slots.free_to_claim()) == (2, 1)


async def test_a_start_from_hand_is_recorded_with_the_next_claim_unless_it_has_ended(
    tasks: list[asyncio.Task[None]],
) -> None:
    slots = Slots(2)
    tasks.append(asyncio.create_task(hold()))
    slots.took(claimed("x", ahead=True), tasks[-1], 12.5)
    start(slots, tasks, "y")  # started with its claim: the database knows already
    tasks.append(asyncio.create_task(hold()))
    slots.took(claimed("z", ahead=True), tasks[-1], 13.0)
    slots.ran("z")  # its outcome records its start
    assert slots.take_starts() == [("x", 1, 12.5)]
    assert slots.take_starts() == []


async def test_short_tasks_leave_room_to_claim_ahead(tasks: list[asyncio.Task[None]]) -> None:
    slots = Slots(2)
    slots.timer = Ticks(AHEAD_WHEN_UNDER / 10)  # short tasks
    start(slots, tasks, "a")
    slots.ran("a")
    slots.forget("a")
    assert slots.ahead_capacity == 2
    assert slots.free_to_claim() == 4  # two to run, two to hold
    slots.ahead.hold([claimed("x"), claimed("y")])
    assert slots.free_to_claim() == 2


async def test_a_waiting_task_starts_only_when_a_slot_is_free(
    tasks: list[asyncio.Task[None]],
) -> None:
    slots = Slots(1)
    slots.ahead.hold([claimed("x"), claimed("y")])
    start(slots, tasks, "a")
    assert slots.next_to_start() is None  # the one slot is taken
    slots.ran("a")
    first = slots.next_to_start()
    assert first is not None and first.task_id == "x"
    assert [t.task_id for t in slots.ahead.waiting] == ["y"]  # taken out, in claim order


def test_ran_is_refused_for_a_task_not_running_here() -> None:
    slots = Slots(2)
    assert not slots.ran("stranger")
    assert (slots.settling, slots.free_to_run()) == (set(), 2)
