"""Kept at this address for the tutorial's `from sitq.serialization import ...`.

The serializers live in `sitq.wire` (how calls and results become bytes), beside JSON and
signing; this module only re-exports what programs written for the tutorial import.
"""

from sitq.wire.serialization import (
    CloudpickleSerializer,
    DumpsLoads,
    DumpsLoadsSerializer,
    Serializer,
    TaskCall,
    TaskImportError,
    TaskNotAllowedError,
    as_serializer,
)

__all__ = [
    "CloudpickleSerializer", "DumpsLoads", "DumpsLoadsSerializer", "Serializer", "TaskCall",
    "TaskImportError", "TaskNotAllowedError", "as_serializer",
]  # fmt: skip
