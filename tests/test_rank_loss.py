"""The scheduler's side of a dead rank (rank_loss.py) on its own, without MPI: what ULFM runs
(test_fault_tolerance.py) checked on every machine, Open MPI or not. Sent messages are recorded."""

import pytest

from hpcray import exceptions
from hpcray._private import protocol as P
from hpcray._private.serialization import deserialize, serialize

from test_scheduler import executed, make_scheduler, submit

pytestmark = pytest.mark.usefixtures("placement_path")  # (conftest: the scan and the RoomIndex)


def value_of(scheduler, object_id):
    return deserialize(scheduler.objects[object_id].value)


def create_actor(scheduler, sent, max_restarts, name=None):
    task_id = (999).to_bytes(16, "big")
    spec = P.TaskSpec(task_id, b"c" * 16, b"blob", "Counter.__init__", serialize(((), {})), [],
                      [task_id + b"\x01"], 1, {"CPU": 1.0}, max_restarts, None, None, None, 0)
    spec.kind = P.ACTOR_CREATE
    spec.actor_id = task_id
    spec.actor_options = P.ActorOptions("Counter", b"meta", name, "", False, {}, None, {}, False, False, None)
    scheduler.handle(0, (P.SUBMIT, spec))
    scheduler.dispatch()
    rank = next(d for d, m in sent if m[0] == P.EXECUTE and m[1].task_id == task_id)
    scheduler.handle(rank, (P.TASK_DONE, task_id, [serialize(None)], None, False))
    return task_id, rank


def call(scheduler, actor_id, n, max_task_retries=0):
    task_id = (5000 + n).to_bytes(16, "big")
    spec = P.TaskSpec(task_id, b"c" * 16, None, "Counter.add", serialize(((), {})), [],
                      [task_id + b"\x01"], 1, {}, max_task_retries, None, None, None, 0)
    spec.kind = P.ACTOR_METHOD
    spec.actor_id = actor_id
    spec.method = "add"
    scheduler.handle(0, (P.SUBMIT, spec))
    scheduler.dispatch()
    return task_id


def test_a_dead_ranks_tasks_run_elsewhere_or_fail_and_its_resources_go():
    scheduler, sent = make_scheduler(ranks=3, prefetch=0)
    ids = submit(scheduler, 3)  # one per rank
    on_one = executed(sent, 1)[0]  # (max_retries=0: it may not run again)
    scheduler.on_ranks_dead([1])
    scheduler.dispatch()
    assert scheduler.resources_view()["total"]["CPU"] == 2.0
    error = value_of(scheduler, on_one + b"\x01")
    assert isinstance(error, exceptions.WorkerCrashedError), error
    assert "noop" in str(error) and "rank 1 (pid 1001 on host)" in str(error)
    scheduler2, sent2 = make_scheduler(ranks=3, prefetch=0)
    submit(scheduler2, 3)
    lost = executed(sent2, 2)[0]
    scheduler2.tasks[lost].retries_left = 3  # max_retries=3
    scheduler2.on_ranks_dead([2])
    scheduler2.handle(1, (P.TASK_DONE, executed(sent2, 1)[0], [serialize(None)], None, False))
    scheduler2.dispatch()
    assert lost in executed(sent2, 1)  # sent again, to the rank that had room
    assert scheduler2.tasks[lost].spec.attempt == 1 and ids


def test_a_value_only_the_dead_rank_held_is_lost():
    scheduler, sent = make_scheduler(ranks=2)
    ids = submit(scheduler, 1)
    stub = serialize(b"x" * 10).stub(1)  # kept in rank 1's private memory
    scheduler.handle(1, (P.TASK_DONE, ids[0], [stub], None, False))
    scheduler.on_ranks_dead([1])
    error = value_of(scheduler, ids[0] + b"\x01")
    assert isinstance(error, exceptions.ObjectLostError) and "rank 1" in str(error)


def test_an_actor_restarts_on_another_rank_until_its_restarts_are_used_up():
    scheduler, sent = make_scheduler(ranks=3)
    actor_id, first = create_actor(scheduler, sent, max_restarts=1, name="counter")
    in_flight = call(scheduler, actor_id, 1)
    scheduler.on_ranks_dead([first])
    error = value_of(scheduler, in_flight + b"\x01")
    assert isinstance(error, exceptions.ActorDiedError) and "being restarted" in str(error)
    waiting = call(scheduler, actor_id, 2)  # made after the death: waits for the new instance
    assert scheduler.objects[waiting + b"\x01"].value is None
    again = [d for d, m in sent if m[0] == P.EXECUTE and m[1].task_id == actor_id]
    assert len(again) == 2 and again[1] != first  # __init__ once more, elsewhere
    second = again[1]
    scheduler.handle(second, (P.TASK_DONE, actor_id, [serialize(None)], None, False))
    assert any(d == second and m[0] == P.ACTOR_CALL and m[1].task_id == waiting for d, m in sent)
    assert scheduler.named_actors_view() == [("", "counter")]
    scheduler.on_ranks_dead([second])
    error = value_of(scheduler, waiting + b"\x01")
    assert isinstance(error, exceptions.ActorDiedError) and "no restarts left" in str(error)
    assert scheduler.named_actors_view() == []


def test_a_call_in_flight_is_sent_again_when_max_task_retries_allows():
    scheduler, sent = make_scheduler(ranks=3)
    actor_id, first = create_actor(scheduler, sent, max_restarts=-1)
    in_flight = call(scheduler, actor_id, 1, max_task_retries=1)
    scheduler.on_ranks_dead([first])
    scheduler.dispatch()  # (the loop's next step when the scheduler is dirty)
    second = [d for d, m in sent if m[0] == P.EXECUTE and m[1].task_id == actor_id][1]
    scheduler.handle(second, (P.TASK_DONE, actor_id, [serialize(None)], None, False))
    assert any(d == second and m[0] == P.ACTOR_CALL and m[1].task_id == in_flight for d, m in sent)
    scheduler.handle(second, (P.TASK_DONE, in_flight, [serialize(7)], None, False))
    assert value_of(scheduler, in_flight + b"\x01") == 7


def test_a_lost_value_is_made_again_by_its_task_where_lineage_is_kept():
    """Lineage reconstruction: the task runs again; a REFETCH that came before the scheduler knew
    of the death is answered once the value is there, and a task that needs it waits for it."""
    scheduler, sent = make_scheduler(ranks=2, prefetch=0)
    scheduler.keeps_lineage = True
    ids = submit(scheduler, 1)
    task_id, value_id = ids[0], ids[0] + b"\x01"
    scheduler.tasks[task_id].retries_left = 3
    holder = next(d for d, m in sent if m[0] == P.EXECUTE)
    scheduler.handle(holder, (P.TASK_DONE, task_id, [serialize(b"x" * 10).stub(holder)], None, False))
    other = 3 - holder
    scheduler.handle(other, (P.REFETCH, value_id, holder))  # it saw the death first
    consumer = (77).to_bytes(16, "big")
    spec = P.TaskSpec(consumer, b"f" * 16, None, "consume", serialize(((), {})), [value_id],
                      [consumer + b"\x01"], 1, {"CPU": 1.0}, 0, None, None, None, 0)
    sent.clear()
    scheduler.on_ranks_dead([holder])
    scheduler.handle(0, (P.SUBMIT, spec))
    scheduler.dispatch()
    assert executed(sent) == [task_id] and scheduler.objects[value_id].value is None  # again, alone
    assert scheduler.tasks[task_id].spec.attempt == 1
    scheduler.handle(other, (P.TASK_DONE, task_id, [serialize(b"y" * 10)], None, False))
    scheduler.dispatch()
    assert deserialize(scheduler.objects[value_id].value) == b"y" * 10
    assert (other, (P.OBJECT, value_id, scheduler.objects[value_id].value)) in sent  # the REFETCH
    assert executed(sent)[-1] == consumer  # its argument is there now


def test_without_retries_or_lineage_a_lost_value_stays_lost():
    for keeps_lineage, retries in ((True, 0), (False, 3)):
        scheduler, sent = make_scheduler(ranks=2)
        scheduler.keeps_lineage = keeps_lineage
        ids = submit(scheduler, 1)
        scheduler.tasks[ids[0]].retries_left = retries
        holder = next(d for d, m in sent if m[0] == P.EXECUTE)
        scheduler.handle(holder, (P.TASK_DONE, ids[0], [serialize(b"x" * 10).stub(holder)], None, False))
        scheduler.on_ranks_dead([holder])
        assert isinstance(value_of(scheduler, ids[0] + b"\x01"), exceptions.ObjectLostError)
        assert ids[0] not in scheduler.tasks


def test_lineage_holds_the_arguments_until_its_values_are_freed():
    scheduler, sent = make_scheduler(ranks=2)
    scheduler.keeps_lineage = True
    arg = b"a" * 20
    scheduler.handle(0, (P.PUT, arg, serialize(1)))
    task_id = (5).to_bytes(16, "big")
    spec = P.TaskSpec(task_id, b"f" * 16, b"blob", "use", serialize(((), {})), [arg], [task_id + b"\x01"], 1,
                      {"CPU": 1.0}, 3, None, None, None, 0)
    scheduler.handle(0, (P.SUBMIT, spec))
    scheduler.dispatch()
    holder = next(d for d, m in sent if m[0] == P.EXECUTE)
    scheduler.handle(holder, (P.TASK_DONE, task_id, [serialize(b"x" * 10).stub(holder)], None, False))
    scheduler.handle(0, (P.HOLD, arg, -1))  # the caller drops its ref to the argument
    assert arg in scheduler.objects  # the lineage holds it
    scheduler.handle(0, (P.HOLD, task_id + b"\x01", -1))  # and the result goes
    assert arg not in scheduler.objects and task_id + b"\x01" not in scheduler.objects


def test_a_new_process_takes_a_dead_ranks_number_resources_and_work():
    """replacement.py: the HELLO of the new process at a dead rank's number brings the rank back
    with the dead one's resources (it is welcomed), and tasks go there again."""
    scheduler, sent = make_scheduler(ranks=2, prefetch=0)
    welcomed = []
    scheduler.on_rank_back = welcomed.append
    scheduler.on_ranks_dead([2])
    assert scheduler.resources_view()["total"]["CPU"] == 1.0
    scheduler.handle(2, (P.HELLO, P.RankInfo(2, "host-b", 4242, {"CPU": 8.0}, [], [])))
    assert [(i.rank, i.pid, i.host, i.resources["CPU"]) for i in welcomed] == [(2, 4242, "host-b", 1.0)]
    assert scheduler.resources_view()["total"]["CPU"] == 2.0
    assert scheduler.generations == {2: 1}
    sent.clear()
    submit(scheduler, 2)
    assert sorted(d for d, m in sent if m[0] == P.EXECUTE) == [1, 2]
    scheduler.handle(1, (P.HELLO, P.RankInfo(1, "host", 1, {"CPU": 1.0}, [], [])))  # (not dead: ignored)
    assert len(welcomed) == 1


def test_a_refetch_names_the_process_that_held_the_value():
    """After a replacement, a REFETCH about the process that died (generation 0) is answered at
    once; one about the new process (generation 1), not yet known dead, waits for its death."""
    scheduler, sent = make_scheduler(ranks=2, prefetch=0)
    scheduler.keeps_lineage = True
    ids = submit(scheduler, 2)
    for task_id in ids:
        holder = next(d for d, m in sent if m[0] == P.EXECUTE and m[1].task_id == task_id)
        scheduler.handle(holder, (P.TASK_DONE, task_id, [serialize(b"v" * 10).stub(holder)], None, False))
    on_two = next(t for t in ids if scheduler.objects[t + b"\x01"].value.location == 2)
    scheduler.on_ranks_dead([2])
    scheduler.handle(2, (P.HELLO, P.RankInfo(2, "host", 4242, {}, [], [])))
    sent.clear()
    scheduler.handle(1, (P.REFETCH, on_two + b"\x01", 2, 0))
    answers = [m for d, m in sent if d == 1 and m[0] == P.OBJECT and m[1] == on_two + b"\x01"]
    assert len(answers) == 1 and isinstance(deserialize(answers[0][2]), exceptions.ObjectLostError)
    sent.clear()
    fresh = submit(scheduler, 1, start=10)[0]
    scheduler.handle(2, (P.TASK_DONE, fresh, [serialize(b"w" * 10).stub(2)], None, False))
    scheduler.handle(1, (P.REFETCH, fresh + b"\x01", 2, 1))
    assert not [m for d, m in sent if d == 1 and m[0] == P.OBJECT]  # the new process is alive
    scheduler.on_ranks_dead([2])
    assert [m[1] for d, m in sent if d == 1 and m[0] == P.OBJECT] == [fresh + b"\x01"]


def test_a_new_process_sends_a_fetch_of_what_it_never_held_to_the_scheduler():
    """The new process at a dead rank's number answers a FETCH of a value it does not hold with
    None (maybe the dead one's); the asking rank then asks the scheduler about the process before."""
    from hpcray._private.object_plane import ObjectPlane
    to_new, to_scheduler = [], []
    new = ObjectPlane(2, lambda dest, msg: to_new.append((dest, msg)), 100, None)
    new.replacement = True
    asker = ObjectPlane(1, lambda dest, msg: to_scheduler.append((dest, msg)), 100, None)
    asker.on_replaced([2])
    got = []
    asker.resolve(b"o" * 20, serialize(b"x").stub(2), got.append)
    assert to_scheduler == [(2, (P.FETCH, b"o" * 20))]
    new.on_fetch(1, b"o" * 20)
    assert to_new == [(1, (P.OBJECT_DATA, b"o" * 20, None))]
    asker.on_object_data(b"o" * 20, None)
    assert to_scheduler[-1] == (0, (P.REFETCH, b"o" * 20, 2, 0)) and got == []
    asker.answer_refetch(b"o" * 20, serialize(b"again"))
    assert [deserialize(v) for v in got] == [b"again"]


def test_no_new_process_is_tried_where_the_launcher_cannot_start_one(monkeypatch, caplog):
    """replacement.py: only Open MPI's own mpiexec (PRTE_LAUNCHED) starts processes for a job;
    elsewhere (srun with ULFM) MPI_Comm_spawn may hang, so a death is logged and not replaced."""
    from hpcray._private import replacement

    class Loop:
        transport = None

        def __init__(self):
            self.deferred = []

        def defer(self, step):
            self.deferred.append(step)

    monkeypatch.setenv("PRTE_LAUNCHED", "1")
    assert replacement.cannot_spawn() is None
    loop = Loop()
    replacement.Replacement(loop, enabled=True).on_dead([2])
    assert len(loop.deferred) == 1
    monkeypatch.delenv("PRTE_LAUNCHED")
    loop = Loop()
    chosen = replacement.Replacement(loop, enabled=True)
    with caplog.at_level("WARNING", logger="hpcray"):
        chosen.on_dead([2])
        chosen.on_dead([3])
    assert loop.deferred == [] and not chosen.enabled
    assert [r.getMessage() for r in caplog.records if "no new process" in r.getMessage()] == [
        "hpcray: no new process for dead rank(s) [2]: the job was not started by Open MPI's mpiexec, the "
        "launcher that can start processes for it; the job goes on with fewer ranks "
        "(HPCRAY_REPLACE_DEAD_RANKS=0 says so quietly)"]
