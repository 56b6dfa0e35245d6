"""``SecretValue``: a secret's bytes held in memory, which refuse to print themselves.

Every way Python turns an object into text (``repr``, ``str``, ``format``/f-strings, ``%``) yields
``<redacted sha256:abcd1234…>``, so a secret that slips into a log call, an exception message or a plan
line shows only a digest prefix. The bytes are reached only through ``.reveal()``, which makes each
deliberate use greppable. Pickling is refused so a value cannot be written out by accident (the store
keeps ``.digest``, never the value).

Neighbours: built by ``secrets.sources``; its digest feeds ``secrets.digest``; its bytes feed
``secrets.redact.Redactor`` (to scrub text) and ``secrets.materialise`` (to write tmpfs files).
"""

from __future__ import annotations

import hashlib
from typing import Any, NoReturn

# digest hex characters shown in redactions: enough to tell two versions apart in a plan, far too few
# to help anyone guess the value
SHOWN_HEX = 8


def redacted(digest: str) -> str:
    """The text shown instead of a value whose sha256 hex is ``digest``."""
    return f"<redacted sha256:{digest[:SHOWN_HEX]}…>"


class SecretValue:
    """Secret bytes, kept in memory only. Compare by digest; never printed."""

    __slots__ = ("_data", "digest")

    def __init__(self, data: bytes | bytearray) -> None:
        if not isinstance(data, bytes | bytearray):
            raise TypeError("a SecretValue holds bytes")
        self._data = bytes(data)
        self.digest: str = hashlib.sha256(self._data).hexdigest()

    def reveal(self) -> bytes:
        """The secret bytes. Call only where they go into a container (tmpfs file, env at exec)."""
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return redacted(self.digest)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        # format() with any spec ("!s", ">20", ...) must not reach the bytes either
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretValue cannot be pickled (it would leave memory)")

    def __getstate__(self) -> NoReturn:
        raise TypeError("a SecretValue cannot be pickled (it would leave memory)")

    def __copy__(self) -> SecretValue:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretValue:
        return self
