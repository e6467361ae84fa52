"""The messages ranks exchange, and the value classes they carry.

Messages are tuples whose first item is the kind. *Upstream* kinds go to the scheduler on rank 0;
*downstream* kinds go from the scheduler to a rank's agent (its object store and executor).
On rank 0 both directions are plain function calls; between ranks they travel in batches, one
MPI message per destination per loop turn.

    upstream                                   downstream
    SUBMIT(spec)                               EXECUTE(spec, fn_blob|None, arg_values, claim|None)
    TASK_DONE(task_id, values|None, error|None, retryable)
    BLOCKED(task_id) / UNBLOCKED(task_id)      OBJECT(object_id, value)
    GET_REQ([object_id])
    REFETCH(object_id, dead_rank)              (answered with OBJECT: rebuilt, or ObjectLostError)
    PUT(object_id, value)
    HOLD(object_id, +1|-1)
    HELLO(rank_info)                           WELCOME(job, gpu_ids, resources, namespace,
                                                       setup_hook, timeline_events)
    RESET_ACK / EXIT_ACK                       RESET / EXIT
    QUERY(name, reply_object_id)               (answered with OBJECT)
    STOLEN(task_id)                            STEAL(task_id): hand back a queued, unstarted task
    KILL(actor_id, no_restart)                 ACTOR_CALL(spec, arg_values): into the mailbox
    ACTOR_EXITED(actor_id, reason)             ACTOR_KILL(actor_id, error) / ACTOR_TERMINATE(id)
    GET_ACTOR(name, namespace, reply_id)       (answered with OBJECT)
    PIN([object_id]): refs inside a task's return values, held until its TASK_DONE is in
    HANDLED(object_id): get() raised this error (it is not reported as unhandled)
    CANCEL(task_id, force, recursive)          CANCEL_TASK(task_id, force): drop it if queued,
                                               interrupt it if running (answered by TASK_DONE)
                                               FREE(object_id): drop a value kept for others
    PG_CREATE / PG_READY / PG_REMOVE           BUNDLE_RESERVE / BUNDLE_RELEASE (placement_groups.py)
    peer to peer: FETCH(object_id) ─► OBJECT_DATA(object_id, value), or OBJECT_DATA_RAW(object_id,
    pickle, contained, layout) followed by its big buffers as raw messages (object_plane.py)

An actor is created by a TaskSpec of kind ACTOR_CREATE (placed like a task; its one return id is
the actor's *handle object*, whose reference count is the count of live handles) and called by
specs of kind ACTOR_METHOD, which the scheduler forwards to the actor's rank in order per caller.
"""

from __future__ import annotations

import operator
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from .serialization import plain_value

# upstream
SUBMIT = 1
TASK_DONE = 2
BLOCKED = 3
UNBLOCKED = 4
GET_REQ = 5
PUT = 6
HOLD = 7
HELLO = 8
RESET_ACK = 9
EXIT_ACK = 10
QUERY = 11
STOLEN = 12
KILL = 13
ACTOR_EXITED = 14
GET_ACTOR = 15
PIN = 16
CANCEL = 17
HANDLED = 18
PG_CREATE = 19  # (group id, bundles, strategy, name): reserve a placement group
PG_READY = 20  # (group id, object id, value): give the object the value once the group is placed
PG_REMOVE = 21  # (group id,)
STREAM_ITEM = 22  # (task id, index, value): a streaming task's next item (streams.py)
STREAM_ACK = 23  # (task id, consumed): the owner has taken this many items of a stream
RANK_REPORT = 24  # (reply id, report): what RANK_REPORT_REQ asked of this rank (status.rank_report)
PROGRESS = 25  # (state,): a progress bar's state, drawn by the driver (progress.py)
REFETCH = 26  # (object_id, dead_rank, generation): this rank wants the value that lived on the
#             dead rank (``generation``: which of the processes at that number, replacement.py)
# downstream
EXECUTE = 101
OBJECT = 102
WELCOME = 103
RESET = 104
EXIT = 105
STEAL = 106
ACTOR_CALL = 107
ACTOR_KILL = 108
ACTOR_TERMINATE = 109
FREE = 110
CANCEL_TASK = 111
BUNDLE_RESERVE = 112  # ((group id, index), bundle, added resources): a rank reserves a bundle
BUNDLE_RELEASE = 113  # ((group id, index),): and gives it back
STREAM_PUSH = 114  # (task id, index, value): an item, to the stream's owner
STREAM_END = 115  # (task id, total): the stream has ``total`` items (the last may be its error)
STREAM_CONSUMED = 116  # (task id, consumed): to the producer of a stream with backpressure
RANK_REPORT_REQ = 117  # (reply id, what): send your "timeline" or "memory" (RANK_REPORT)
REPLACE = 118  # (ranks,): new processes replace these dead ranks: join the collective (replacement.py)
# peer to peer (any rank to any rank, object_plane.py)
FETCH = 301
OBJECT_DATA = 302
OBJECT_DATA_RAW = 303

# kinds of TaskSpec
TASK = 0
ACTOR_CREATE = 1
ACTOR_METHOD = 2

# TaskSpec.num_returns of generator tasks (their one return id is the stream's completion)
STREAMING = -1  # items are objects of their own, pushed to the owner as they are made
DYNAMIC = -2  # items are put; the one return value is a DynamicObjectRefGenerator of their refs

#: local-only item on a rank's command queue (never sent): run a function on the comm thread
CALL = 201
#: local-only: the scheduler already counted a hold of this object for this rank (a handle it sent)
ADOPT = 202
#: local-only: fetch these values, of which only a stub is here (object_plane.py)
FETCH_LOCAL = 203


def is_upstream(kind: int) -> bool:
    return kind < 100


def is_peer(kind: int) -> bool:
    return kind >= 300


class ActorOptions(NamedTuple):
    """What an actor's creation carries besides its class and arguments."""
    class_name: str
    meta_blob: bytes  # the handles' view of the class (hpcray.actor._ActorMeta), pickled
    name: Optional[str]
    namespace: str
    detached: bool
    lifetime: Dict[str, float]  # resources the living actor holds
    max_concurrency: Optional[int]  # None: 1, or 1000 for an async actor
    groups: Dict[str, int]  # concurrency groups and their limits
    is_async: bool
    get_if_exists: bool
    reply: Optional[bytes]  # where a named actor's creation is answered


class TaskSpec:
    """Everything a rank needs to run one task, and the scheduler needs to place it."""

    __slots__ = ("task_id", "fn_id", "fn_blob", "name", "deps", "return_ids", "num_returns",
                 "demand", "max_retries", "retry_blob", "env_vars", "strategy", "owner", "attempt",
                 "kind", "actor_id", "method", "actor_options", "group", "stream_limit", "parent", "submitted",
                 "args")  # args last: see _flat_spec

    def __init__(self, task_id: bytes, fn_id: bytes, fn_blob: Optional[bytes], name: str, args: Any,
                 deps: List[bytes], return_ids: List[bytes], num_returns: int, demand: Dict[str, float],
                 max_retries: int, retry_blob: Any, env_vars: Optional[Dict[str, str]],
                 strategy: Optional[tuple], owner: int):
        self.task_id = task_id
        self.fn_id = fn_id
        self.fn_blob = fn_blob
        self.name = name
        self.args = args
        self.deps = deps
        self.return_ids = return_ids
        self.num_returns = num_returns
        self.demand = demand
        self.max_retries = max_retries
        self.retry_blob = retry_blob
        self.env_vars = env_vars
        self.strategy = strategy
        self.owner = owner
        self.attempt = 0
        self.kind = TASK
        self.actor_id: Optional[bytes] = None
        self.method: Optional[str] = None
        self.actor_options: Optional[ActorOptions] = None  # an actor's creation
        self.group: Optional[str] = None  # an actor call's concurrency group (None: the default)
        self.stream_limit = 0  # a stream's producer pauses with this many items unconsumed (0: never)
        self.parent: Optional[bytes] = None  # the task that submitted this one (for cancel)
        self.submitted = time.time()  # for the timeline (timeline.py)

    def __reduce__(self):
        return (_rebuild_spec, _spec_state(self))


_spec_state = operator.attrgetter(*TaskSpec.__slots__)  # every slot, in order, in one C call


def _rebuild_spec(task_id, fn_id, fn_blob, name, deps, return_ids, num_returns, demand, max_retries,
                  retry_blob, env_vars, strategy, owner, attempt, kind, actor_id, method, actor_options, group,
                 stream_limit, parent, submitted, args):
    # plain attribute stores: 3x faster than a loop over the slots' setters (one per message)
    spec = TaskSpec.__new__(TaskSpec)
    spec.task_id = task_id
    spec.fn_id = fn_id
    spec.fn_blob = fn_blob
    spec.name = name
    spec.args = args
    spec.deps = deps
    spec.return_ids = return_ids
    spec.num_returns = num_returns
    spec.demand = demand
    spec.max_retries = max_retries
    spec.retry_blob = retry_blob
    spec.env_vars = env_vars
    spec.strategy = strategy
    spec.owner = owner
    spec.attempt = attempt
    spec.kind = kind
    spec.actor_id = actor_id
    spec.method = method
    spec.actor_options = actor_options
    spec.group = group
    spec.stream_limit = stream_limit
    spec.parent = parent
    spec.submitted = submitted
    return spec


class RankInfo:
    """What a rank tells the scheduler about itself when it joins."""

    __slots__ = ("rank", "host", "pid", "resources", "gpu_ids", "gpu_names", "gpus_wanted")

    def __init__(self, rank: int, host: str, pid: int, resources: Dict[str, float],
                 gpu_ids: List[str], gpu_names: List[str], gpus_wanted: Optional[float] = None):
        self.rank = rank
        self.host = host
        self.pid = pid
        self.resources = resources
        self.gpu_ids = gpu_ids  # those it sees; once the driver shared them out, those it owns
        self.gpu_names = gpu_names
        self.gpus_wanted = gpus_wanted  # HPCRAY_NUM_GPUS or its share of init(num_gpus=); None: not given

    def __reduce__(self):
        return (RankInfo, (self.rank, self.host, self.pid, self.resources, self.gpu_ids, self.gpu_names,
                           self.gpus_wanted))


# ---- wire form --------------------------------------------------------------------------------
# Between ranks, the TaskSpecs and plain values (pickle bytes only: no buffers, no location) in
# the busiest kinds of message (and a stream's items) travel as tuples. Pickle saves a class
# reference for every object it rebuilds through __reduce__ (an import lookup on both sides,
# about 0.6 µs each): an actor call pickles in 0.8 µs this way against 3.3 µs as objects, and
# unpickles in 0.8 against 2.7 µs.
# CommLoop.send encodes a message for another rank; CommLoop._remote decodes what arrives.

def _flat(value: Any) -> Any:
    state = None if value is None else value.plain_state()
    return value if state is None else state  # else None, or a value that travels as an object


def _value(flat: Any) -> Any:
    return plain_value(*flat) if type(flat) is tuple else flat


_spec_rest = operator.attrgetter(*TaskSpec.__slots__[:-1])  # every slot but args (the last one)


def _flat_spec(spec: TaskSpec) -> tuple:
    return _spec_rest(spec), _flat(spec.args)


def _spec(wire: tuple) -> TaskSpec:
    return _rebuild_spec(*wire[0], _value(wire[1]))


def _flat_values(values: Optional[List[Any]]) -> Optional[List[Any]]:
    return [_flat(v) for v in values] if values else values


def _values(flat: Optional[List[Any]]) -> Optional[List[Any]]:
    return [_value(v) for v in flat] if flat else flat


_ENCODE: Dict[int, Callable[[tuple], tuple]] = {
    SUBMIT: lambda m: (m[0], _flat_spec(m[1])),
    EXECUTE: lambda m: (m[0], _flat_spec(m[1]), m[2], _flat_values(m[3]), m[4]),
    ACTOR_CALL: lambda m: (m[0], _flat_spec(m[1]), _flat_values(m[2])),
    TASK_DONE: lambda m: (m[0], m[1], _flat_values(m[2]), _flat(m[3]), m[4]),
    OBJECT: lambda m: (m[0], m[1], _flat(m[2])),
    STREAM_ITEM: lambda m: (m[0], m[1], m[2], _flat(m[3])),
    STREAM_PUSH: lambda m: (m[0], m[1], m[2], _flat(m[3])),
}
_DECODE: Dict[int, Callable[[tuple], tuple]] = {
    SUBMIT: lambda m: (m[0], _spec(m[1])),
    EXECUTE: lambda m: (m[0], _spec(m[1]), m[2], _values(m[3]), m[4]),
    ACTOR_CALL: lambda m: (m[0], _spec(m[1]), _values(m[2])),
    TASK_DONE: lambda m: (m[0], m[1], _values(m[2]), _value(m[3]), m[4]),
    OBJECT: lambda m: (m[0], m[1], _value(m[2])),
    STREAM_ITEM: lambda m: (m[0], m[1], m[2], _value(m[3])),
    STREAM_PUSH: lambda m: (m[0], m[1], m[2], _value(m[3])),
}


def encode(msg: tuple) -> tuple:
    """A message as it leaves for another rank."""
    codec = _ENCODE.get(msg[0])
    return msg if codec is None else codec(msg)


def decode(msg: tuple) -> tuple:
    """A message as it arrived from another rank, objects rebuilt."""
    codec = _DECODE.get(msg[0])
    return msg if codec is None else codec(msg)
