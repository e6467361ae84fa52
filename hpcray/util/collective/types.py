"""Types of ``hpcray.util.collective`` (Ray's ``ray.util.collective.types``)."""

from ..._private.collective import ReduceOp


class Backend:
    """Backend names Ray programs pass. Every one of them runs on MPI in hpcray."""
    MPI = "mpi"
    NCCL = "nccl"
    GLOO = "gloo"
    TORCH_GLOO = "torch_gloo"


__all__ = ["Backend", "ReduceOp"]
