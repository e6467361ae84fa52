"""Which GPUs each worker rank owns: the driver decides at ``init()`` from what every rank saw.

Each rank reports the GPUs it can see (``detect``: pynvml's UUIDs in PCI order, or an already
narrowed ``CUDA_VISIBLE_DEVICES``) and how many it was asked to have (``HPCRAY_NUM_GPUS``, or its
share of ``init(num_gpus=...)``; None: no amount given). Per host, ``share_out``:

- ranks that see different GPUs, or that Slurm bound GPUs to (``--gpus-per-task``: with device
  cgroups every task may see its own GPU as "0"), keep what they see;
- ranks that see the same GPUs share them out: every GPU goes to exactly one rank, as evenly as
  whole GPUs allow (4 over 3 ranks: 2, 1, 1; 2 over 3 ranks: 1, 1, 0), or, given an amount each,
  consecutive GPUs of that amount. Ranks share a GPU only when the amounts asked for add up to more
  GPUs than the host has, and then ``share_out`` says so, as it says how an uneven split went.

The driver (rank 0) runs no tasks and is given no GPU; its own code sees what its launcher gave it.
A rank that sees no GPU but is asked for some gets pretend ids ``0..n-1`` (for tests on machines
without GPUs). Ray's accelerator names (``accelerator_type:A100``) come from the model name.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

#: what Ray takes as the model from an NVML name: the leading capitals and digits of its second
#: word ("NVIDIA A100-SXM4-80GB" -> A100, "NVIDIA H100 80GB HBM3" -> H100, "Tesla V100-SXM2" -> V100)
_MODEL = re.compile(r"\w+\s+([A-Z0-9]+)")


def detect() -> Tuple[List[str], List[str]]:
    """GPU ids this process may use, and their model names.

    The ids are what CUDA_VISIBLE_DEVICES should name: an already set CUDA_VISIBLE_DEVICES is
    respected (empty, ``-1`` or ``NoDevFiles``: none); otherwise pynvml's UUIDs in PCI order. No
    pynvml or no driver: no GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names: List[str] = []
    uuids: List[str] = []
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pynvml  # type: ignore
        pynvml.nvmlInit()
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                uuid = pynvml.nvmlDeviceGetUUID(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                uuids.append(uuid.decode() if isinstance(uuid, bytes) else uuid)
                names.append(name.decode() if isinstance(name, bytes) else name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no device: no GPUs
        uuids, names = [], []
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() not in ("-1", "NoDevFiles")]
        return ids, names[: len(ids)] if len(names) >= len(ids) else names[:1] * len(ids)
    return uuids, names


def accelerator_type(names: Sequence[str]) -> Optional[str]:
    """Ray's name for the model of the first GPU (``A100``, ``H100``, ``V100``), or None."""
    if not names:
        return None
    match = _MODEL.match(names[0])
    return match.group(1) if match else None


class RankGPUs:
    """What one worker rank reported: its host, the GPUs it sees, the amount it was asked for."""

    __slots__ = ("rank", "host", "seen", "wanted")

    def __init__(self, rank: int, host: str, seen: Sequence[str], wanted: Optional[float]):
        self.rank = rank
        self.host = host
        self.seen = list(seen)
        self.wanted = None if wanted is None else int(wanted)


def share_out(ranks: Sequence[RankGPUs], bound: bool) -> Tuple[Dict[int, List[str]], List[str]]:
    """The GPUs each rank owns, and sentences for the user about any uneven split or sharing.
    ``bound``: Slurm (or the user) bound each task's GPUs; every rank keeps what it sees."""
    by_host: Dict[str, List[RankGPUs]] = {}
    for rank in ranks:
        by_host.setdefault(rank.host, []).append(rank)
    owned: Dict[int, List[str]] = {}
    notes: List[str] = []
    for host, members in by_host.items():
        members.sort(key=lambda r: r.rank)
        if bound or len({tuple(m.seen) for m in members}) > 1:
            for member in members:
                owned[member.rank] = _narrowed(member.seen, member.wanted, member.rank, notes)
            continue
        seen = members[0].seen
        asked = any(m.wanted is not None for m in members)
        counts = [m.wanted or 0 for m in members] if asked else _even(len(seen), len(members))
        if sum(counts) <= len(seen):
            start = 0
            for member, count in zip(members, counts):
                owned[member.rank] = seen[start:start + count]
                start += count
            if len(set(counts)) > 1 and not asked:
                notes.append(f"{len(seen)} GPUs of host {host} over {len(members)} worker ranks: "
                             + _describe(members, counts) + " (every GPU is used by one rank)")
            continue
        start = 0  # the amounts asked for exceed the host's GPUs: ranks share, said out loud
        for member, count in zip(members, counts):
            if count > len(seen):
                owned[member.rank] = _narrowed(seen, count, member.rank, notes)
                continue
            owned[member.rank] = [seen[(start + k) % len(seen)] for k in range(count)]
            start += count
        if seen:
            notes.append(f"host {host} has {len(seen)} GPUs but its {len(members)} worker ranks were asked for "
                         f"{sum(counts)} in all: they share GPUs ({_describe(members, counts)})")
    return owned, notes


def _narrowed(seen: List[str], wanted: Optional[int], rank: int, notes: List[str]) -> List[str]:
    if wanted is None:
        return list(seen)
    if wanted <= len(seen):
        return seen[:wanted]
    if seen:
        notes.append(f"rank {rank} was asked for {wanted} GPUs but sees {len(seen)}: it advertises pretend "
                     f"ids 0..{wanted - 1}")
    return [str(i) for i in range(wanted)]


def _even(gpus: int, ranks: int) -> List[int]:
    base, extra = divmod(gpus, ranks)
    return [base + (1 if i < extra else 0) for i in range(ranks)]


def _describe(members: Sequence[RankGPUs], counts: Sequence[int]) -> str:
    groups: Dict[int, List[int]] = {}
    for member, count in zip(members, counts):
        groups.setdefault(count, []).append(member.rank)
    parts = []
    for count, ranks in sorted(groups.items(), reverse=True):
        who = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(r) for r in ranks)
        parts.append(f"{who} {'has' if len(ranks) == 1 else 'have'} {count}" + ("" if len(ranks) == 1 else " each"))
    return "; ".join(parts)
