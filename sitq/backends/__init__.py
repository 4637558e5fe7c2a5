"""Storage backends. `Backend` (in base.py) is the only seam between sitq and a database."""

from sitq.backends.base import Backend, ClaimedTask, NewTask, Settlement

__all__ = ["Backend", "ClaimedTask", "NewTask", "Settlement"]
