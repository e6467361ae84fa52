"""Ray's DAG API (``.bind()``, ``hpcray.dag``): graphs of tasks and actor calls, run by execute()."""

import hpcray as ray
from hpcray.dag import InputNode, MultiOutputNode

from .helpers import append_line, count_lines, raises, scratch_file


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def mul(a, b):
    return a * b


@ray.remote
def counted(path, value):
    append_line(path)
    return value


@ray.remote
class Accumulator:
    def __init__(self, start):
        self.total = start

    def add(self, value):
        self.total += value
        return self.total


def case_a_graph_of_tasks_runs_on_each_execute():
    with InputNode() as inp:
        dag = mul.bind(add.bind(inp, 1), 2)
    assert ray.get(dag.execute(3)) == 8
    assert ray.get(dag.execute(10)) == 22
    assert ray.get(add.options(num_cpus=0).bind(2, 3).execute()) == 5  # no input: none needed


def case_a_node_used_twice_runs_once_per_execute():
    marker = scratch_file("dag-shared")
    with InputNode() as inp:
        shared = counted.bind(marker, inp)
        dag = MultiOutputNode([add.bind(shared, 1), mul.bind(shared, 10)])
    refs = dag.execute(4)
    assert isinstance(refs, list) and ray.get(refs) == [5, 40]
    assert count_lines(marker) == 1
    ray.get(dag.execute(5))
    assert count_lines(marker) == 2


def case_actors_in_a_graph():
    with InputNode() as inp:
        made = Accumulator.bind(10)  # a new actor on each execute
        dag = made.add.bind(inp)
    assert ray.get(dag.execute(5)) == 15
    assert ray.get(dag.execute(1)) == 11
    existing = Accumulator.remote(0)  # a method of a live actor: its state carries over
    with InputNode() as inp:
        on_existing = existing.add.bind(inp)
    assert ray.get(on_existing.execute(2)) == 2
    assert ray.get(on_existing.execute(3)) == 5


def case_parts_of_the_input_and_bad_input():
    with InputNode() as inp:
        dag = add.bind(inp[0], inp[1])
        by_name = mul.bind(inp.x, inp.y)
    assert ray.get(dag.execute(2, 3)) == 5
    assert ray.get(by_name.execute(x=4, y=5)) == 20
    with InputNode() as inp:
        needs_input = add.bind(inp, 1)
    raises(ValueError, needs_input.execute, match="no input")
    raises(ValueError, by_name.execute, x=1, match="'y'")
