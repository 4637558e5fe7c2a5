"""A known attempt history for exercises/12_monitoring: a given seed gives the same one.

The checkers compare a student's numbers with known ones, so the data must be made, not
measured: three kinds of task arriving every 2 s, each failing now and then, retried
with its own delays, and an outage of the prices API in the middle.
"""

from __future__ import annotations

import random

from sitq.clock import DEFAULT_FAKE_START
from sitq.task import Attempt

T0 = DEFAULT_FAKE_START  # every dataset starts here, like a fresh FakeClock

#: task name: (its error type, normal failure rate per attempt, retry delays in seconds)
KINDS: dict[str, tuple[str, float, tuple[float, ...]]] = {
    "fetch_prices": ("ConnectionError", 0.08, (2.0, 4.0, 8.0)),
    "send_email": ("TimeoutError", 0.12, (5.0, 5.0)),
    "resize_image": ("ValueError", 0.05, ()),
}
#: Seconds after T0 when the prices API is down: most fetch_prices attempts fail.
OUTAGE = (150.0, 200.0)
ARRIVALS = ("fetch_prices", "send_email", "fetch_prices", "resize_image")


def example_history(seed: int = 0, tasks: int = 150) -> list[Attempt]:
    """A seeded history: three kinds of task, one every 2 s for 300 s, and an outage.

    The same seed always gives the same attempts, ordered by finish time, so a checker
    can compare a student's numbers with known ones.
    """
    rng = random.Random(seed)
    records = []
    for i in range(tasks):
        name = ARRIVALS[i % len(ARRIVALS)]
        error, rate, delays = KINDS[name]
        scheduled = start = T0 + 2.0 * i
        for number in range(1, len(delays) + 2):
            finish = start + rng.uniform(0.05, 0.5)
            down = name == "fetch_prices" and OUTAGE[0] <= start - T0 < OUTAGE[1]
            if rng.random() >= (0.7 if down else rate):
                outcome, kind, delay = "succeeded", None, None
            elif number > len(delays):
                outcome, kind, delay = "failed", error, None
            else:
                outcome, kind, delay = "retrying", error, delays[number - 1]
            message = None if kind is None else f"{name} attempt {number} went wrong"
            task_id = f"{name}-{i:03d}"
            records.append(
                Attempt(task_id=task_id, task_name=name, attempt=number, worker_id="worker-1",
                        scheduled_for=scheduled, started_at=start, finished_at=finish,
                        outcome=outcome, error_type=kind, error_message=message,
                        next_delay=delay)
            )  # fmt: skip
            if delay is None:
                break
            scheduled = start = finish + delay
    records.sort(key=lambda a: (a.finished_at, a.task_id))
    return records
