"""The one shape of Ray's id classes (ActorID, PlacementGroupID): bytes with ``hex()`` and
``binary()``, equal when type and bytes are equal."""

from __future__ import annotations

from typing import Any


class BinaryID:
    __slots__ = ("_id",)

    def __init__(self, binary: bytes):
        if not isinstance(binary, bytes):
            raise TypeError(f"{type(self).__name__} takes bytes, got {type(binary).__name__}")
        self._id = binary

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()})"

    def __reduce__(self):
        return (type(self), (self._id,))
