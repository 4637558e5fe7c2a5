"""Four minutes of the shop's failing traffic, for lesson 13 to replay (lesson 12 builds it).

Lesson 12 writes this workload cell by cell and explains every part of it: three kinds of
task that fail in their own ways, their retry policies, a circuit breaker on `charge_card`
and the four minutes of arrivals. Lesson 13 looks at the same run from other sides, so
instead of copying twelve cells it calls `four_minutes()`, which is that code in one place.

The replay gives the very history lesson 12 analysed: the run is on a FakeClock (which
starts at the same moment every time), the "random" failures come from coins seeded with
each task's key and attempt (`seeded_coin`), and the worker draws its jitter from
`random.Random(0)`, one draw per retry in the order the retries happen.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import sitq
from sitq import CircuitBreaker, FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, Worker
from sitq.task import Attempt
from sitq.teaching.lessons import seeded_coin

START = FakeClock().now()  # when the four minutes begin: a FakeClock's fixed start
OUTAGE = (90, 150)  # seconds after START when the payment API is down

payment_retry = RetryPolicy.exponential_jitter(2, cap=30, max_attempts=4)
email_retry = RetryPolicy.fixed(5, max_attempts=3)


async def charge_card(order_id: int) -> str:
    """Calls the payment API: down during the OUTAGE, and 5% of calls fail anyway."""
    task = sitq.current_task()
    assert task.started_at is not None  # set for every task that runs
    if OUTAGE[0] <= task.started_at - START < OUTAGE[1]:
        raise ConnectionError("payment API unreachable")
    if seeded_coin(order_id, task.attempt, 0.05):
        raise ConnectionError("connection reset by payment API")
    return f"charged order {order_id}"


async def send_email(user: str) -> str:
    """Talks to a slow mail server: 30% of attempts time out."""
    if seeded_coin(user, sitq.current_task().attempt, 0.3):
        raise TimeoutError("mail server did not answer within 10 s")
    return f"mailed {user}"


async def resize_image(name: str) -> str:
    """12% of the files are corrupt: a permanent error (the coin is tossed for attempt 1)."""
    if seeded_coin(name, 1, 0.12):
        raise ValueError(f"{name} is not a valid image")
    return f"resized {name}"


@dataclass
class Traffic:
    """What the four minutes leave behind, to look at."""

    clock: FakeClock  # the run's virtual clock, at the end of the four minutes
    queue: TaskQueue  # open: close it when done (the worker has not been stopped either)
    worker: Worker  # the worker that ran everything, holding the breaker
    breaker: CircuitBreaker  # charge_card's breaker, with its transitions
    history: list[Attempt]  # every attempt, as queue.history() returns them


async def four_minutes(folder: str | os.PathLike[str]) -> Traffic:
    """Run lesson 12's four minutes of traffic on a new queue in `folder`, to the end.

    An order every 3 s, an email every 6 s, an image every 8 s: 150 tasks, each enqueued
    with a delay so that it becomes due at its moment, played in virtual time.
    """
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=3, recovery_timeout=10, clock=clock, name="charge_card"
    )
    backend = SQLiteBackend(Path(folder) / "monitoring.db")
    queue = await TaskQueue(backend, clock=clock).connect()
    worker = Worker(
        backend,
        clock=clock,
        worker_id="worker-1",
        rng=random.Random(0),
        breakers={"charge_card": breaker},
    )
    for i in range(80):
        await queue.with_options(delay=3 * i, retry=payment_retry).enqueue(charge_card, 1000 + i)
    for i in range(40):
        await queue.with_options(delay=6 * i, retry=email_retry).enqueue(send_email, f"user{i}")
    for i in range(30):
        await queue.with_options(delay=8 * i).enqueue(resize_image, f"photo{i}.jpg")
    await worker.run_until_idle()
    history = await queue.history()
    return Traffic(clock=clock, queue=queue, worker=worker, breaker=breaker, history=history)
