"""SignedSerializer: an HMAC on every payload and result, bound to its task and field.

A signature covers the field ("payload" or "result"), the task id and the bytes, and it is
checked before the inner serializer reads anything: a changed, unsigned, foreign or moved
value is refused with `SignatureError` and never unpickled.
"""

from __future__ import annotations

import hmac
from typing import Any

from sitq.errors import SignatureError
from sitq.wire.serialization import CloudpickleSerializer, Serializer, TaskCall


class SignedSerializer:
    """Wraps another serializer and HMAC-signs every value with a secret key, bound to its place.

    A row is verified *before* the inner serializer sees it, so a tampered or unsigned
    pickle is refused with `SignatureError` and never unpickled. Share the key between the
    processes that enqueue and the workers, and keep it out of the database.

    The signature covers the task id and the field ("payload" or "result") as well as the
    bytes. Without that, someone who can write the database could copy a signed *result* (data
    a task returned, perhaps echoing user input) into another row's *payload* and have it run
    as a call, or copy one task's result onto another. Bound, a value is valid only where it
    was written; a moved value is refused and never decoded. Rows signed by sitq versions
    that signed the bytes alone are refused too: re-enqueue them.
    """

    DIGEST = "sha256"  # a name, as hmac.new takes it
    TAG_SIZE = 32
    VERSION = b"sitq-signed-v2"  # what is signed changed once: the bytes alone were "v1"

    def __init__(self, key: bytes | str, inner: Serializer | None = None) -> None:
        key_bytes = key.encode() if isinstance(key, str) else bytes(key)
        if len(key_bytes) < 16:
            raise ValueError("a signing key needs at least 16 bytes; use secrets.token_hex(32)")
        self._key = key_bytes
        self.inner: Serializer = inner or CloudpickleSerializer()

    def _tag(self, data: bytes, field: str, task_id: str | None) -> bytes:
        """The HMAC of the bytes *and* their place, so a copy elsewhere does not verify."""
        if not isinstance(task_id, str) or not task_id:
            raise SignatureError(
                f"SignedSerializer binds each {field} to its task, so it needs the task id: "
                f"call it with task_id=... (got {task_id!r})"
            )
        place = task_id.encode()
        header = b"\0".join([self.VERSION, field.encode(), len(place).to_bytes(4, "big")])
        return hmac.new(self._key, header + b"\0" + place + data, self.DIGEST).digest()

    def _sign(self, data: bytes, field: str, task_id: str | None) -> bytes:
        return self._tag(data, field, task_id) + data

    def _verify(self, signed: bytes, field: str, task_id: str | None) -> bytes:
        tag, data = signed[: self.TAG_SIZE], signed[self.TAG_SIZE :]
        expected = self._tag(data, field, task_id)
        if len(signed) < self.TAG_SIZE or not hmac.compare_digest(tag, expected):
            raise SignatureError(
                f"{field} signature does not match for task {task_id}: the row is unsigned, "
                f"was changed, was signed with another key, or is a {field} copied from "
                "another row or field (a signed value is valid only where it was written). "
                "It was not deserialized."
            )
        return data

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        data = self.inner.encode_call(call, task_id=task_id or "")
        return self._sign(data, "payload", task_id)

    def decode_call(self, data: bytes, *, task_id: str | None = None) -> TaskCall:
        verified = self._verify(data, "payload", task_id)
        return self.inner.decode_call(verified, task_id=task_id or "")

    def encode_value(self, value: Any, *, task_id: str | None = None) -> bytes:
        data = self.inner.encode_value(value, task_id=task_id or "")
        return self._sign(data, "result", task_id)

    def decode_value(self, data: bytes, *, task_id: str | None = None) -> Any:
        verified = self._verify(data, "result", task_id)
        return self.inner.decode_value(verified, task_id=task_id or "")

    def __repr__(self) -> str:
        return f"SignedSerializer(inner={self.inner!r})"
