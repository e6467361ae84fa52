"""Values to bytes and back: cloudpickle protocol 5 with out-of-band buffers.

``serialize`` turns any value into a ``SerializedValue``: the pickle stream, the raw buffers
(numpy arrays, bytes-likes) kept out of the stream, and the ids of the ObjectRefs found inside.
The contained ids let the scheduler keep nested objects alive while the container exists.

A value that becomes an object (``put``, a task's return) and is larger than the inline limit
is copied once into this rank's node-shared arena (arena.py) when there is one; its
``placement`` says where, and ``deserialize`` hands out pinned, read-only views of it.
"""

from __future__ import annotations

import io
import pickle
import sys
import threading
import types
from collections import ChainMap
from typing import Any, List, Sequence

import cloudpickle

_tls = threading.local()


class SerializedValue:
    """One value as it travels: pickle bytes, out-of-band buffers, contained ObjectRef ids."""

    __slots__ = ("data", "buffers", "contained", "is_error", "location", "placement", "lease")

    def __init__(self, data: bytes, buffers: Sequence[Any], contained: Sequence[bytes], is_error: bool = False,
                 location: "int | None" = None, placement: Any = None, lease: Any = None):
        self.data = data
        self.buffers = buffers
        self.contained = contained
        self.is_error = is_error
        self.location = location  # a stub: the value itself lives on this rank (object_plane.py)
        self.placement = placement  # where its bytes lie in a node-shared arena (arena.py), or None
        self.lease = lease  # on the producer: keeps that arena block allocated

    def stub(self, location: int) -> "SerializedValue":
        return SerializedValue(b"", (), self.contained, False, location, self.placement)

    @property
    def nbytes(self) -> int:
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def plain_state(self) -> "tuple | None":
        """(data, contained, is_error) when only the pickle bytes travel (no out-of-band buffers,
        not a stub), which is most values; ``plain_value(*state)`` rebuilds it. Else None."""
        if not self.buffers and self.location is None:
            return (self.data, self.contained, self.is_error)
        return None

    def __reduce__(self):
        state = self.plain_state()
        if state is not None:
            return (plain_value, state)
        # Protocol 5 keeps large buffers out of band in the transport (comm.MPITransport).
        bufs = [pickle.PickleBuffer(b) for b in self.buffers]
        return (_rebuild_value, (self.data, bufs, self.contained, self.is_error, self.location,
                                 self.placement))


def plain_value(data: bytes, contained: Sequence[bytes], is_error: bool) -> SerializedValue:
    return SerializedValue(data, (), contained, is_error)


def _rebuild_value(data, buffers, contained, is_error, location=None, placement=None):
    # the buffers were copied in transit: this copy is not in an arena, even if the original is
    return SerializedValue(data, [memoryview(b) for b in buffers], contained, is_error, location,
                           placement if location is not None else None)


class _Arena:
    """This rank's node-shared arena, set by the runtime when the job has one."""

    arena = None
    min_bytes = 0


def use_arena(arena: Any, min_bytes: int) -> None:
    _Arena.arena = arena
    _Arena.min_bytes = min_bytes


def note_contained_ref(object_id: bytes) -> None:
    """Called by ObjectRef.__reduce__: record a ref found while serializing."""
    collector = getattr(_tls, "collector", None)
    if collector is not None:
        collector.append(object_id)


def serialize(value: Any, is_error: bool = False, shared: bool = False) -> SerializedValue:
    """Pickle ``value`` (protocol 5); buffers are copied once so later mutation cannot change it.

    ``shared``: the value becomes an object; a large one is copied into the arena if it fits.
    """
    if _is_plain(value, 0):  # None, numbers, strings and small containers of them: C pickle
        return SerializedValue(pickle.dumps(value, protocol=5), (), (), is_error)
    buffers: List[pickle.PickleBuffer] = []
    np = sys.modules.get("numpy")  # (an array exists only where numpy was imported)
    if np is not None and type(value) is np.ndarray and not value.dtype.hasobject:
        # a plain array pickles the same with the C pickler, 3x faster than cloudpickle's
        # (33 against 12 µs for 1 MB here), and holds no ObjectRef
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        contained: Sequence[bytes] = ()
    else:
        outer = getattr(_tls, "collector", None)
        _tls.collector = contained = []
        try:
            data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        finally:
            _tls.collector = outer
    arena = _Arena.arena
    if shared and arena is not None:
        views = [contiguous(b) for b in buffers]
        if len(data) + sum(v.nbytes for v in views) > _Arena.min_bytes:
            stored = arena.store(data, views)
            if stored is not None:
                arena_views, placement, lease = stored
                return SerializedValue(data, arena_views, contained, is_error, None, placement, lease)
    return SerializedValue(data, [_owned_copy(b) for b in buffers] if buffers else (), tuple(contained), is_error)


_PLAIN = frozenset((type(None), bool, int, float, complex, str, bytes))


def _is_plain(value: Any, depth: int) -> bool:
    """True for values plain pickle handles exactly like cloudpickle, cheap to check."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if depth >= 2:
        return False
    if kind is tuple or kind is list:
        return len(value) <= 16 and all(_is_plain(item, depth + 1) for item in value)
    if kind is dict:
        return len(value) <= 16 and all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def contiguous(buffer: pickle.PickleBuffer) -> memoryview:
    """The buffer's bytes as one flat memoryview: the buffer itself, or a C-order copy when it
    is not contiguous."""
    try:
        return buffer.raw()
    except BufferError:  # not contiguous: gathered in C order
        return memoryview(memoryview(buffer).tobytes())


def _owned_copy(buffer: pickle.PickleBuffer) -> bytes:
    """One copy of an out-of-band buffer (a put is a snapshot of the value)."""
    try:
        return bytes(buffer.raw())
    except BufferError:  # not contiguous: tobytes() gathers it in C order
        return memoryview(buffer).tobytes()


def deserialize(sv: SerializedValue, object_id: "bytes | None" = None) -> Any:
    """The value. Arena-backed buffers become read-only views, each holding an ObjectRef to
    ``object_id`` so the arena block stays allocated while they live; with no id they are copied."""
    if sv.placement is None or not sv.buffers:
        return pickle.loads(sv.data, buffers=sv.buffers)
    if object_id is None:
        return pickle.loads(sv.data, buffers=[bytes(b) for b in sv.buffers])
    from .arena import pinned_view
    from .object_ref import ObjectRef
    pin = ObjectRef(object_id)
    return pickle.loads(sv.data, buffers=[pinned_view(b, pin) for b in sv.buffers])


#: how cloudpickle reduces a code object (None: a cloudpickle that does it otherwise keeps its way)
_cloudpickle_code_reduce = cloudpickle.Pickler.dispatch_table.get(types.CodeType)


def _code_reduce_keeping_file(code: types.CodeType) -> tuple:
    """cloudpickle's reduction of a code object, with the code's own file name where cloudpickle
    writes "<dynamic-code>" (to make payloads deterministic across hosts)."""
    constructor, args = _cloudpickle_code_reduce(code)
    return constructor, tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)


class _FunctionPickler(cloudpickle.Pickler):
    """cloudpickle, keeping the file name of each function it pickles by value: a task's
    traceback then names the user's file and line (and shows the line, on a host that has the
    file), as Ray's does, instead of ``File "<dynamic-code>"``."""

    if _cloudpickle_code_reduce is not None:
        dispatch_table = ChainMap({types.CodeType: _code_reduce_keeping_file}, cloudpickle.Pickler.dispatch_table)


def dumps_function(obj: Any) -> bytes:
    """Pickle a function or class by value where needed (lambdas, closures, __main__)."""
    stream = io.BytesIO()
    _FunctionPickler(stream, protocol=5).dump(obj)
    return stream.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def describe_unpicklable(value: Any, exc: BaseException, what: str) -> TypeError:
    """The TypeError raised at the call that passed an unpicklable value."""
    text = repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return TypeError(f"Could not serialize {what} {text}: {type(exc).__name__}: {exc}")


def try_serialize(value: Any, what: str, is_error: bool = False, shared: bool = False) -> SerializedValue:
    try:
        return serialize(value, is_error, shared)
    except Exception as exc:  # pickling raises many types: normalise to one clear TypeError
        raise describe_unpicklable(value, exc, what) from exc

