"""What makes a queue show live in Jupyter, kept out of queue.py: `TaskQueue` inherits it.

`queue.live()` builds a `sitq.views.live.LiveView`, and Jupyter's display of a queue
(`_repr_mimebundle_`) is that view. Both import the front end only when they are called,
so the engine loads no widget code, and a queue nobody displays starts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from sitq.engine.queue import TaskQueue
    from sitq.engine.worker import Worker
    from sitq.views.live import LiveView


class LiveDisplay:
    """The live-view methods of `TaskQueue`."""

    def live(
        self,
        *,
        interval: float = 1.0,
        window: float = 120.0,
        worker: Worker | Iterable[Worker] | None = None,
    ) -> LiveView:
        """A widget that shows this queue live in Jupyter: it refreshes every `interval`
        seconds while it is displayed (see `sitq.views.live`). `window`: how far back its rates
        look, in seconds of the queue's clock. `worker`: a Worker (or several) in this
        kernel whose circuit breakers to show."""
        from sitq.views.live import LiveView

        return LiveView(cast("TaskQueue", self), interval=interval, window=window, worker=worker)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        """In Jupyter a queue shows as its live view; without ipywidgets, as its repr."""
        from sitq.views.live import bundle_of

        return bundle_of(cast("TaskQueue", self), **kwargs)
