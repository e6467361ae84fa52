"""Rank 0's tables and Python's cyclic collector (gc_policy.py): what is tracked moves out of the
collector's way as the tables grow, comes back when they shrink or the session ends, and a
program that manages the collector itself is left alone."""

import gc

import pytest

from hpcray._private import protocol as P
from hpcray._private.gc_policy import GcPolicy
from test_scheduler import done, executed, make_scheduler, submit


@pytest.fixture(autouse=True)
def nothing_frozen():
    """Each case starts and ends with no frozen object and the collector on."""
    gc.unfreeze()
    assert gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable()


def test_tables_that_grow_freeze_at_each_step_and_thaw_when_they_shrink():
    policy = GcPolicy(step=100)
    policy.note(99)
    assert gc.get_freeze_count() == 0
    policy.note(100)
    first = gc.get_freeze_count()
    assert first > 0
    keep = [[i] for i in range(50)]  # tracked objects made after the first freeze
    policy.note(150)  # not a step further yet
    assert gc.get_freeze_count() == first
    policy.note(200)
    assert gc.get_freeze_count() >= first + len(keep)
    policy.note(51)  # above a quarter of 200
    assert gc.get_freeze_count() > 0
    policy.note(50)
    assert gc.get_freeze_count() == 0
    policy.note(99)  # thawed: the first step counts again
    assert gc.get_freeze_count() == 0
    policy.note(100)
    assert gc.get_freeze_count() > 0


def test_the_end_of_the_session_thaws_what_was_frozen():
    policy = GcPolicy(step=10)
    policy.note(10)
    assert gc.get_freeze_count() > 0
    policy.release()
    assert gc.get_freeze_count() == 0
    policy.release()  # twice: nothing to do
    assert gc.get_freeze_count() == 0


def test_garbage_cycles_among_frozen_objects_are_collected_after_the_thaw():
    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    policy = GcPolicy(step=10)
    policy.note(10)
    del a, b
    before = sum(type(o) is Node for o in gc.get_objects())
    gc.collect()
    assert sum(type(o) is Node for o in gc.get_objects()) == before  # frozen: not even looked at
    policy.release()
    gc.collect()
    assert not any(type(o) is Node for o in gc.get_objects())


def test_a_program_that_froze_objects_itself_keeps_them_frozen():
    gc.freeze()
    theirs = gc.get_freeze_count()
    policy = GcPolicy(step=10)
    policy.note(10)
    policy.note(0)
    policy.release()
    assert gc.get_freeze_count() == theirs


def test_a_program_that_turned_the_collector_off_is_left_alone():
    gc.disable()
    policy = GcPolicy(step=10)
    policy.note(10)
    assert gc.get_freeze_count() == 0


def test_the_scheduler_freezes_as_its_tables_grow_and_thaws_as_they_shrink():
    scheduler, sent = make_scheduler(ranks=1, prefetch=2)
    scheduler.gc = GcPolicy(step=40)  # (20 tasks: 20 records and 20 return objects)
    submit(scheduler, 20)
    assert gc.get_freeze_count() > 0
    while scheduler.tasks:  # each ends; the next queued one is sent as they do
        done(scheduler, 1, next(t for t in executed(sent, 1) if t in scheduler.tasks))
    assert gc.get_freeze_count() > 0  # the 20 values are still held by their submitter
    for object_id in list(scheduler.objects):
        scheduler.handle(0, (P.HOLD, object_id, -1))
    scheduler.dispatch()
    assert not scheduler.objects and gc.get_freeze_count() == 0
