"""User code that uses MPI itself, in actors and on the driver: hpcray talks on a communicator of
its own (a duplicate of the world's), so a send on any tag, a wildcard receive or a collective on
``COMM_WORLD`` never meets hpcray's messages, and hpcray keeps working meanwhile.

Where init() spawned the workers, ``COMM_WORLD`` is what MPI makes it: the driver's world is the
driver alone and the workers' world is the workers (numbered from 0), as the README says."""

from mpi4py import MPI

import hpcray as ray


@ray.remote(scheduling_strategy="SPREAD")  # one peer per worker rank (holding no CPU)
class Peer:
    def rank(self):
        return MPI.COMM_WORLD.Get_rank()

    def send(self, dest, payload, tag):
        self.sending = MPI.COMM_WORLD.isend(payload, dest=dest, tag=tag)
        return True

    def finish_send(self):
        self.sending.wait()
        return True

    def receive_any(self):
        status = MPI.Status()
        value = MPI.COMM_WORLD.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
        return value, status.Get_source(), status.Get_tag()

    def barrier(self):
        MPI.COMM_WORLD.Barrier()
        return True


@ray.remote
def square(x):
    return x * x


def worker_ranks():
    ranks = sorted({r for node in ray.nodes() for r in node["Ranks"] if r != 0})
    return ranks or [0]  # single rank: the driver's process runs the actors


def case_wildcard_receive_and_any_tag_do_not_meet_hpcray_messages():
    peers = [Peer.remote() for _ in range(max(2, len(worker_ranks())))]
    ranks = ray.get([p.rank.remote() for p in peers], timeout=60)
    assert len(set(ranks)) == len(worker_ranks()), ranks  # one peer per worker process
    sender, receiver = peers[0], peers[-1]
    for tag in (7, 8, 9, 0):  # hpcray's own tags on its own communicator, among others
        waiting = receiver.receive_any.remote()  # blocked in a wildcard MPI receive meanwhile
        assert ray.get([square.remote(i) for i in range(20)], timeout=60) == [i * i for i in range(20)]
        assert ray.get(sender.send.remote(ranks[-1], {"tag": tag}, tag), timeout=60)
        value, source, got_tag = ray.get(waiting, timeout=60)
        assert (value, source, got_tag) == ({"tag": tag}, ranks[0], tag)
        assert ray.get(sender.finish_send.remote(), timeout=60)
    for peer in peers:
        ray.kill(peer)


def case_collective_on_comm_world_among_driver_and_actors():
    peers = [Peer.remote() for _ in worker_ranks()]
    ray.get([p.rank.remote() for p in peers], timeout=60)  # placed and running
    if MPI.COMM_WORLD.Get_size() == 1:  # single rank, or spawned workers: the driver's world is itself
        assert ray.get([p.barrier.remote() for p in peers], timeout=60) == [True] * len(peers)
    else:
        arrived = [p.barrier.remote() for p in peers]
        MPI.COMM_WORLD.Barrier()  # every rank of the world: the driver and one actor per worker
        assert ray.get(arrived, timeout=60) == [True] * len(peers)
    assert ray.get(square.remote(7), timeout=60) == 49
    for peer in peers:
        ray.kill(peer)
