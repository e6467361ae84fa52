"""The loop's turns lent to waiting threads (comm.CommLoop.lend) and the control messages' wire
format; the scenario runs single rank and under mpiexec."""

import inspect
import pickle
import threading
import time

import pytest

from conftest import run_mpi, run_single, run_spawn
from hpcray._private import protocol as P
from hpcray._private.comm import CommLoop
from hpcray._private.placement import InGroup, Spread

from test_lifecycle import run, MODES


def test_task_spec_round_trips_every_slot():
    assert list(inspect.signature(P._rebuild_spec).parameters) == list(P.TaskSpec.__slots__)
    spec = P.TaskSpec(b"t" * 16, b"f" * 16, b"blob", "name", ("args",), [b"d"], [b"r"], 1, {"CPU": 1.0},
                      3, b"retry", {"A": "1"}, InGroup(b"g" * 16, 1, True), 2)
    for value, slot in enumerate(("attempt", "kind", "actor_id", "method", "actor_options", "group", "stream_limit", "parent")):
        setattr(spec, slot, f"{slot}-{value}")
    copy = pickle.loads(pickle.dumps(spec, protocol=5))
    assert {s: getattr(copy, s) for s in P.TaskSpec.__slots__} == {s: getattr(spec, s) for s in P.TaskSpec.__slots__}


def test_ids_follow_their_layout():
    """Task and object ids: job | rank | sequence number (| index), made without rank 0."""
    from hpcray._private.object_ref import IdSource, job_of, make_task_id, object_id_of, return_ids_of
    source = IdSource(7, 3)
    first, second = source.next_task_id(), source.next_task_id()
    assert (first, second) == (make_task_id(7, 3, 1), make_task_id(7, 3, 2))
    assert first[:8] == (7).to_bytes(4, "big") + (3).to_bytes(4, "big") and len(first) == 16
    assert int.from_bytes(second[8:], "big") == 2
    assert return_ids_of(first, 1) == (object_id_of(first, 1),)
    assert return_ids_of(first, 3) == tuple(object_id_of(first, i) for i in (1, 2, 3))
    assert return_ids_of(first, 0) == ()
    assert job_of(object_id_of(second, 1)) == 7


def test_messages_keep_every_field_in_their_wire_form():
    from hpcray._private.serialization import SerializedValue, serialize

    def same(a, b):
        if isinstance(a, P.TaskSpec):
            return all(same(getattr(a, s), getattr(b, s)) for s in P.TaskSpec.__slots__)
        if hasattr(a, "buffers") and hasattr(a, "location"):  # a SerializedValue
            return (a.data, [bytes(x) for x in a.buffers], a.contained, a.is_error, a.location) == \
                (b.data, [bytes(x) for x in b.buffers], b.contained, b.is_error, b.location)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    plain = serialize({"a": 1})
    error = serialize(ValueError("boom"), is_error=True)
    with_buffer = SerializedValue(b"data", [memoryview(b"x" * 64)], [b"c" * 20], False)
    stub = plain.stub(3)
    spec = P.TaskSpec(b"t" * 16, b"f" * 16, None, "name", plain, [b"d" * 20], [b"r" * 20], 1, {"CPU": 1.0},
                      3, b"retry", {"A": "1"}, Spread(), 2)
    spec.kind, spec.actor_id, spec.method, spec.group = P.ACTOR_METHOD, b"a" * 16, "m", "g"
    messages = [
        (P.SUBMIT, spec), (P.EXECUTE, spec, b"blob", [plain, stub, with_buffer], (3, 1)), (P.EXECUTE, spec, None, [], None),
        (P.ACTOR_CALL, spec, [error]), (P.TASK_DONE, b"t" * 16, [plain, stub], None, False),
        (P.TASK_DONE, b"t" * 16, None, error, True), (P.OBJECT, b"o" * 20, with_buffer), (P.OBJECT, b"o" * 20, plain),
        (P.HOLD, b"o" * 20, -1), (P.STREAM_ITEM, b"t" * 16, 3, plain), (P.STREAM_ITEM, b"t" * 16, 4, stub),
        (P.STREAM_PUSH, b"t" * 16, 5, error), (P.STREAM_END, b"t" * 16, 6),
    ]
    for msg in messages:
        wire = pickle.loads(pickle.dumps([P.encode(msg)], protocol=5))[0]
        assert same(P.decode(wire), msg), msg
    # the common case carries no class reference at all
    assert b"TaskSpec" not in pickle.dumps(P.encode((P.ACTOR_CALL, spec, [plain])), protocol=5)
    assert b"_rebuild" not in pickle.dumps(P.encode((P.TASK_DONE, b"t" * 16, [plain], None, False)), protocol=5)


def make_loop():
    loop = CommLoop(0, None, spin_us=2000.0, max_sleep_us=1000.0)
    ran_on = []
    loop.agent = lambda msg: ran_on.append(threading.current_thread().name)
    loop.start()
    return loop, ran_on


def test_a_waiting_thread_runs_the_turns_itself():
    """With no comm thread to compete (the loop runs, its thread is not started), every command
    a submitting or waiting thread posts runs on that thread, in its own turns."""
    loop = CommLoop(0, None, spin_us=2000.0, max_sleep_us=1000.0)
    loop.agent = lambda msg: None
    loop.running = True
    assert loop.lendable
    ran_on = []
    for _ in range(20):
        time.sleep(0.002)  # not a burst (a burst goes out in batches: config.BATCH_S)
        loop.post_and_turn((P.CALL, lambda: ran_on.append(threading.current_thread().name)))
    assert ran_on == ["MainThread"] * 20, ran_on
    done = []
    loop.post((P.CALL, lambda: done.append(threading.current_thread().name)))
    assert loop.lend(lambda: bool(done), time.monotonic() + 5, 0.0)
    assert done == ["MainThread"]
    helper = threading.Thread(target=lambda: loop.lend(lambda: len(done) == 2, time.monotonic() + 5, 0.0),
                              name="waiter")
    loop.commands.append((P.CALL, lambda: done.append(threading.current_thread().name)))
    helper.start()
    helper.join(5)
    assert done == ["MainThread", "waiter"]
    loop.running = False


def test_one_guest_at_a_time_and_the_comm_thread_steps_back():
    loop, _ = make_loop()
    try:
        inside = threading.Event()
        release = threading.Event()
        answers = []

        def guest():
            loop.lend(lambda: inside.set() or release.is_set(), time.monotonic() + 5, 5.0)

        holder = threading.Thread(target=guest)
        holder.start()
        assert inside.wait(5)
        answers.append(loop.lend(None, None, 0.0, max_turns=1))  # the loop is lent already
        seen = []
        loop.post((P.CALL, lambda: seen.append(threading.current_thread().name)))
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()
        holder.join(5)
        assert answers == [False]
        assert seen == [holder.name]  # the guest ran it; the comm thread stayed out
        ran = []
        loop.post((P.CALL, lambda: ran.append(threading.current_thread().name)))
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ran == [loop.thread.name]  # the guest left: the comm thread runs the turns again
    finally:
        loop.stop()


def test_the_comm_thread_cannot_lend_to_itself():
    loop, _ = make_loop()
    try:
        assert loop.call(lambda: loop.lend(None, None, 0.0, max_turns=1)) is False
    finally:
        loop.stop()


@pytest.mark.parametrize("mode", MODES)
def test_interrupts_during_get_lose_no_message(mode):
    proc = run(mode, "interrupts.py", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INTERRUPTS_IN_WORK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_c_inside_lend_leaves_no_lock_taken(mode):
    proc = run(mode, "ctrl_c_in_lend.py", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CTRL_C_IN_LEND_OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_c_inside_a_call_is_raised_when_the_call_is_over(mode):
    proc = run(mode, "ctrl_c_in_call.py", timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CTRL_C_IN_CALL_OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_bad_inline_progress_setting_is_an_error_naming_the_variable(mode):
    code = "import hpcray; hpcray.init()"
    env = {"HPCRAY_INLINE_PROGRESS": "yes"}
    if mode == "mpi":
        proc = run_mpi(["-c", code], ranks=2, timeout=60, env=env)
    else:
        proc = (run_single if mode == "single" else run_spawn)(["-c", code], timeout=60, env=env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "HPCRAY_INLINE_PROGRESS='yes'" in proc.stderr and "ValueError" in proc.stderr, proc.stderr
