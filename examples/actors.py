"""Actors: stateful workers, named actors, an ActorPool and a Queue shared with tasks."""

import hpcray as ray
from hpcray.util import ActorPool
from hpcray.util.queue import Queue

ray.init()


@ray.remote
class Accumulator:
    def __init__(self):
        self.total = 0

    def add(self, value):
        self.total += value
        return self.total


@ray.remote
class Doubler:
    def double(self, x):
        return 2 * x


@ray.remote
def produce(queue, n):
    for i in range(n):
        queue.put(i)
    return n


acc = Accumulator.options(name="accumulator").remote()
ray.get([acc.add.remote(i) for i in range(10)])
same = ray.get_actor("accumulator")
print("total via named handle:", ray.get(same.add.remote(0)))

pool = ActorPool([Doubler.remote() for _ in range(3)])
print("doubled:", list(pool.map(lambda actor, v: actor.double.remote(v), range(8))))

queue = Queue(maxsize=4)
done = produce.remote(queue, 10)
print("from the queue:", [queue.get(timeout=10) for _ in range(10)], "producer sent", ray.get(done))
