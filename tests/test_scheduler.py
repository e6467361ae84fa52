"""The scheduler on its own (no MPI, no threads): how deep a busy rank's queue may get, and how
queued tasks are asked back when another rank has room. Sent messages are recorded, not sent."""

import pytest

from hpcray._private import protocol as P
from hpcray._private import scheduler as S
from hpcray._private.scheduler import Scheduler
from hpcray._private.serialization import serialize


class Clock:
    """Stands in for time.monotonic inside the scheduler module."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


pytestmark = pytest.mark.usefixtures("placement_path")  # (conftest: the scan and the RoomIndex)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(S.time, "monotonic", fake)
    return fake


def make_scheduler(ranks=2, prefetch=2):
    sent = []
    workers = [P.RankInfo(r, "host", 1000 + r, {"CPU": 1.0}, [], []) for r in range(1, ranks + 1)]
    scheduler = Scheduler(lambda dest, msg: sent.append((dest, msg)), workers, prefetch)
    return scheduler, sent


def submit(scheduler, n, start=0, demand=None):
    ids = []
    for i in range(start, start + n):
        task_id = i.to_bytes(16, "big")
        spec = P.TaskSpec(task_id, b"f" * 16, b"blob" if i == 0 else None, "noop", serialize(((), {})), [],
                          [task_id + b"\x01"], 1, dict(demand or {"CPU": 1.0}), 0, None, None, None, 0)
        scheduler.handle(0, (P.SUBMIT, spec))
        ids.append(task_id)
    scheduler.dispatch()
    return ids


def executed(sent, rank=None):
    return [m[1].task_id for d, m in sent if m[0] == P.EXECUTE and (rank is None or d == rank)]


def running(scheduler, sent, rank):
    """The task the rank runs now (the first one sent to it that has not ended)."""
    return next(t for t in executed(sent, rank) if t in scheduler.ranks[rank].ledger.running)


def done(scheduler, rank, task_id):
    scheduler.handle(rank, (P.TASK_DONE, task_id, [serialize(None)], None, False))
    scheduler.dispatch()


def test_a_rank_of_unknown_pace_holds_prefetch_tasks_queued():
    scheduler, sent = make_scheduler(ranks=2, prefetch=2)
    submit(scheduler, 20)
    # one running and two queued per rank; the rest waits at the scheduler
    assert len(executed(sent, 1)) == 3 and len(executed(sent, 2)) == 3
    assert scheduler.stats()["ready"] == 14


def test_a_rank_that_finishes_tasks_quickly_is_sent_more(clock):
    scheduler, sent = make_scheduler(ranks=1, prefetch=2)
    submit(scheduler, 200)
    for _ in range(20):  # tasks end every 20 µs while the rank stays busy
        clock.now += 20e-6
        done(scheduler, 1, running(scheduler, sent, 1))
    state = scheduler.ranks[1]
    assert state.pace == pytest.approx(20e-6)
    expected = min(S.DEPTH_MAX, int(S.LOOKAHEAD_S / 20e-6))
    assert state.depth(2) == expected
    assert len(state.ledger.queued) == expected  # topped up to the depth its pace calls for


def test_slow_tasks_keep_the_queue_at_prefetch(clock):
    scheduler, sent = make_scheduler(ranks=1, prefetch=2)
    submit(scheduler, 50)
    for _ in range(5):  # tasks of 1 s
        clock.now += 1.0
        done(scheduler, 1, running(scheduler, sent, 1))
    assert scheduler.ranks[1].depth(2) == 2
    assert len(scheduler.ranks[1].ledger.queued) == 2


def test_an_idle_gap_does_not_count_as_a_slow_task(clock):
    scheduler, sent = make_scheduler(ranks=1, prefetch=2)
    submit(scheduler, 3)
    for task_id in executed(sent, 1):
        clock.now += 20e-6
        done(scheduler, 1, task_id)
    pace = scheduler.ranks[1].pace
    clock.now += 60.0  # nothing to do for a minute
    submit(scheduler, 1, start=3)
    clock.now += 20e-6
    done(scheduler, 1, executed(sent, 1)[-1])
    assert scheduler.ranks[1].pace == pace


def test_queued_tasks_are_asked_back_one_per_rank_with_room(clock):
    scheduler, sent = make_scheduler(ranks=2, prefetch=2)
    state1, state2 = scheduler.ranks[1], scheduler.ranks[2]
    state1.pace = state2.pace = 20e-6  # both known to be fast: deep queues
    submit(scheduler, 60)  # all of them go out: 1 running + 29 queued per rank
    assert len(state1.ledger.queued) == len(state2.ledger.queued) == 29
    assert scheduler.stats()["ready"] == 0
    # rank 2 runs out of work: it finishes everything it was sent
    for task_id in executed(sent, 2):
        scheduler.handle(2, (P.TASK_DONE, task_id, [serialize(None)], None, False))
    scheduler.dispatch()
    steals = [m[1] for d, m in sent if m[0] == P.STEAL]
    assert all(d == 1 for d, m in sent if m[0] == P.STEAL)
    assert len(steals) == 1 and scheduler.steals_out == 1  # one at a time, not all 29
    scheduler.dispatch()  # another pass while the first is on its way: no second STEAL
    assert [m[1] for d, m in sent if m[0] == P.STEAL] == steals
    scheduler.handle(1, (P.STOLEN, steals[0]))
    scheduler.dispatch()
    assert scheduler.steals_out == 0
    assert steals[0] in executed(sent, 2)  # placed again where there was room


def test_a_task_that_started_before_its_steal_arrived_settles_the_steal():
    scheduler, sent = make_scheduler(ranks=2, prefetch=2)
    submit(scheduler, 1, demand={"CPU": 1.0})
    first = executed(sent, 1)[0]
    submit(scheduler, 2, start=1)  # one runs on rank 2, one queues on rank 1 behind the first
    queued = [t for t, _ in scheduler.ranks[1].ledger.queued]
    assert queued
    done(scheduler, 2, executed(sent, 2)[0])  # rank 2 is free now: the queued task is asked back
    steals = [m[1] for d, m in sent if m[0] == P.STEAL]
    assert steals == queued[:1] and scheduler.steals_out == 1
    done(scheduler, 1, first)  # rank 1 starts it before the STEAL arrives, and finishes it
    done(scheduler, 1, steals[0])
    assert scheduler.steals_out == 0 and steals[0] not in scheduler.tasks


def test_no_rank_with_room_means_no_steal(clock):
    scheduler, sent = make_scheduler(ranks=2, prefetch=2)
    submit(scheduler, 10)
    for _ in range(3):
        scheduler.dispatch()
    assert not [m for d, m in sent if m[0] == P.STEAL] and scheduler.steals_out == 0


def test_a_large_job_places_every_task_once_and_keeps_every_rank_busy():
    """Tasks end in a random order on 16 ranks: each task is sent once (a steal brings it back
    first), starts on a rank with room before any is queued, and none is left behind."""
    import random
    rng = random.Random(7)
    scheduler, sent = make_scheduler(ranks=16, prefetch=2)
    ids = submit(scheduler, 200)
    assert [d for d, m in sent if m[0] == P.EXECUTE][:16] == list(range(1, 17))  # one each first
    finished = set()
    while len(finished) < len(ids):
        running = [(rank, t) for rank, state in scheduler.ranks.items() for t in state.ledger.running]
        rank, task_id = rng.choice(running)
        scheduler.handle(rank, (P.TASK_DONE, task_id, [serialize(None)], None, False))
        scheduler.dispatch()
        for dest, msg in list(sent):
            if msg[0] == P.STEAL:  # a rank hands back what it has not started
                sent.remove((dest, msg))
                if msg[1] not in scheduler.ranks[dest].ledger.running:
                    scheduler.handle(dest, (P.STOLEN, msg[1]))
        scheduler.dispatch()
        finished.add(task_id)
        for state in scheduler.ranks.values():
            assert state.ledger.running or not state.ledger.queued  # a queue only behind a task
        if len(finished) < len(ids) - 16:  # while work is left, no rank sits idle
            assert all(state.ledger.running for state in scheduler.ranks.values())
    assert not scheduler.tasks and finished == set(ids)


class FakeClaims:
    """claims.ClaimBoard's scheduler side, without MPI: ``taken`` says how take_back ends."""

    def __init__(self, taken):
        self.taken = taken
        self.handed, self.tried, self.back = [], [], []

    def hand_out(self, rank):
        claim = (rank, len(self.handed))
        self.handed.append(claim)
        return claim

    def take_back(self, claim):
        self.tried.append(claim)
        return self.taken

    def give_back(self, rank, claim):
        self.back.append(claim)


def queued_behind_a_new_function(claims):
    """Rank 1 runs a task of a function never seen to end, a second task queues behind it, and
    rank 2 runs out of work."""
    scheduler, sent = make_scheduler(ranks=2, prefetch=2)
    scheduler.claims = claims
    first = submit(scheduler, 1)[0]
    submit(scheduler, 2, start=1)
    queued = [t for t, _ in scheduler.ranks[1].ledger.queued]
    assert len(queued) == 1 and scheduler.tasks[queued[0]].claim is not None
    done(scheduler, 2, executed(sent, 2)[0])
    return scheduler, sent, first, queued[0]


def test_a_task_queued_behind_an_unknown_one_is_taken_back_without_asking_the_rank():
    """claims.py: a rank stuck in a call that holds the GIL cannot answer a STEAL; its queued
    task is taken back through its claim and runs on the rank with room at once."""
    claims = FakeClaims(taken=True)
    scheduler, sent, first, queued = queued_behind_a_new_function(claims)
    assert not [m for d, m in sent if m[0] == P.STEAL]
    assert claims.tried == claims.back == claims.handed
    assert queued in executed(sent, 2) and scheduler.tasks[queued].rank == 2
    assert not scheduler.ranks[1].ledger.queued and scheduler.tasks[queued].claim is None


def test_a_claimed_task_that_started_stays_and_gives_its_cell_back_when_done():
    claims = FakeClaims(taken=False)
    scheduler, sent, first, queued = queued_behind_a_new_function(claims)
    assert claims.tried == claims.handed and claims.back == []  # it runs there: nothing moves
    assert not [m for d, m in sent if m[0] == P.STEAL] and queued not in executed(sent, 2)
    done(scheduler, 1, first)
    done(scheduler, 1, queued)
    assert claims.back == claims.handed


def test_a_task_queued_behind_a_short_function_gets_no_claim():
    scheduler, sent = make_scheduler(ranks=2, prefetch=2)
    scheduler.claims = claims = FakeClaims(taken=True)
    done(scheduler, 1, submit(scheduler, 1)[0])  # (ends at once: its function is short)
    first = submit(scheduler, 1, start=1)[0]
    submit(scheduler, 2, start=2)
    queued = [t for t, _ in scheduler.ranks[scheduler.tasks[first].rank].ledger.queued]
    assert queued and all(scheduler.tasks[t].claim is None for t in queued) and claims.handed == []
