"""Cases of tasks.py, actors.py, cancel.py and waiting.py with HPCRAY_INLINE_PROGRESS=0: no thread
lends itself to the loop, every command is handed to the comm thread and every task to an
executor thread (the path an MPI without MPI_THREAD_SERIALIZED takes)."""

from .actors import case_async_actor_concurrency_and_await_ref, case_fifo_even_when_earlier_call_waits_on_argument
from .cancel import case_cancel_chain_head_fails_all_and_middle_fails_rest, case_many_cancels_nothing_hangs
from .tasks import case_nested_submission_many, case_recursive_tree_does_not_deadlock
from .waiting import case_wait_many

ENV = {"HPCRAY_INLINE_PROGRESS": "0"}

__all__ = ["case_async_actor_concurrency_and_await_ref", "case_fifo_even_when_earlier_call_waits_on_argument",
           "case_cancel_chain_head_fails_all_and_middle_fails_rest", "case_many_cancels_nothing_hangs",
           "case_nested_submission_many", "case_recursive_tree_does_not_deadlock", "case_wait_many"]
