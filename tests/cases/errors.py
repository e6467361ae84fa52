"""Errors: Ray's test_failure checklist and the exception classes, in both launch modes."""

import os
import pickle
import time

import hpcray as ray
from hpcray import exceptions

from .helpers import append_line, count_lines, raises, scratch_file


class CustomError(Exception):
    pass


@ray.remote
def divide(a, b):
    return a / b


def case_task_error_is_both_types():
    exc = raises(ZeroDivisionError, ray.get, divide.remote(1, 0))
    assert isinstance(exc, exceptions.RayTaskError)
    assert isinstance(exc, exceptions.RayError)
    assert isinstance(exc.cause, ZeroDivisionError)
    text = str(exc)
    assert "divide" in text and "pid=" in text and "rank=" in text and "ZeroDivisionError" in text
    assert "Traceback" in text


def case_traceback_names_the_file_and_line_of_the_function():
    """Functions travel pickled by value; their tracebacks still name the user's file and line."""
    text = str(raises(ZeroDivisionError, ray.get, divide.remote(1, 0)))
    with open(__file__) as source:
        line = next(n for n, l in enumerate(source, 1) if l.strip() == "return a / b")
    assert f'File "{os.path.abspath(__file__)}", line {line}, in divide' in text, text
    assert "return a / b" in text, text  # the source line, read from the file


def case_error_two_tasks_deep():
    @ray.remote
    def outer():
        return ray.get(divide.remote(1, 0))

    exc = raises(ZeroDivisionError, ray.get, outer.remote())
    assert isinstance(exc, exceptions.RayTaskError)


def case_custom_exception_type():
    @ray.remote
    def fail():
        raise CustomError("mine")

    exc = raises(CustomError, ray.get, fail.remote(), match="mine")
    assert isinstance(exc.cause, CustomError)


def case_failed_dependency_fails_dependents_without_running():
    marker = scratch_file("ran")

    @ray.remote
    def consume(x):
        append_line(marker)
        return x

    @ray.remote
    def fail():
        raise CustomError("upstream")

    bad = fail.remote()
    dependents = [consume.remote(bad) for _ in range(3)]
    chained = consume.remote(consume.remote(bad))
    for ref in dependents + [chained]:
        raises(CustomError, ray.get, ref, match="upstream")
    time.sleep(0.3)
    assert count_lines(marker) == 0


def case_exceptions_pickle():
    samples = [
        exceptions.RayError("x"), exceptions.GetTimeoutError("t"), exceptions.TaskCancelledError(b"id"),
        exceptions.WorkerCrashedError(), exceptions.ObjectLostError("ab"), exceptions.OwnerDiedError("ab"),
        exceptions.RayActorError(error_msg="dead"), exceptions.ActorDiedError(error_msg="gone"),
        exceptions.RaySystemError("sys"), exceptions.PendingCallsLimitExceeded("p"),
        exceptions.RayTaskError("f", "tb", ValueError("v"), pid=1, ip="h", rank=2),
        exceptions.RayTaskError("f", "tb", ValueError("v")).as_instanceof_cause(),
    ]
    for exc in samples:
        again = pickle.loads(pickle.dumps(exc))
        assert type(again).__name__ == type(exc).__name__
        assert str(again) == str(exc)
    dual = pickle.loads(pickle.dumps(samples[-1]))
    assert isinstance(dual, ValueError) and isinstance(dual, exceptions.RayTaskError)
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
    assert issubclass(exceptions.ActorDiedError, exceptions.RayActorError)
    assert issubclass(exceptions.OwnerDiedError, exceptions.ObjectLostError)


def case_retry_exceptions_true_uses_budget():
    counter = scratch_file("retry")

    @ray.remote(retry_exceptions=True, max_retries=2)
    def flaky():
        append_line(counter)
        if count_lines(counter) < 3:
            raise CustomError("again")
        return "ok"

    assert ray.get(flaky.remote()) == "ok"
    assert count_lines(counter) == 3


def case_retry_exceptions_budget_exhausted():
    counter = scratch_file("retry")

    @ray.remote(retry_exceptions=[CustomError], max_retries=5)
    def always():
        append_line(counter)
        raise CustomError("always")

    raises(CustomError, ray.get, always.remote())
    assert count_lines(counter) == 6  # 1 run + 5 retries, no more


def case_retry_exceptions_only_listed_types():
    counter = scratch_file("retry")

    @ray.remote(retry_exceptions=[KeyError], max_retries=3)
    def other():
        append_line(counter)
        raise CustomError("not retried")

    raises(CustomError, ray.get, other.remote())
    assert count_lines(counter) == 1


def case_no_retry_of_application_errors_by_default():
    counter = scratch_file("retry")

    @ray.remote
    def once():
        append_line(counter)
        raise CustomError("once")

    raises(CustomError, ray.get, once.remote())
    assert count_lines(counter) == 1
    counter2 = scratch_file("retry")

    @ray.remote(retry_exceptions=True, max_retries=3)
    def twice():
        append_line(counter2)
        raise CustomError("x")
    raises(CustomError, ray.get, twice.options(retry_exceptions=False).remote())
    assert count_lines(counter2) == 1


def case_system_exit_retried_with_max_retries():
    counter = scratch_file("exit")

    @ray.remote(max_retries=2)
    def exits():
        append_line(counter)
        if count_lines(counter) < 3:
            raise SystemExit(1)
        return "third time"

    assert ray.get(exits.remote()) == "third time"


def case_worker_survives_errors():
    for _ in range(5):
        raises(ZeroDivisionError, ray.get, divide.remote(1, 0))
    assert ray.get(divide.remote(4, 2)) == 2.0


def case_unpicklable_exception_still_surfaces():
    @ray.remote
    def raise_unpicklable():
        import threading

        class Bad(Exception):
            def __init__(self):
                super().__init__("bad")
                self.lock = threading.Lock()
        raise Bad()

    exc = raises(exceptions.RayTaskError, ray.get, raise_unpicklable.remote())
    assert "Bad" in str(exc)


def case_error_message_names_rank_and_host():
    exc = raises(ZeroDivisionError, ray.get, divide.remote(1, 0))
    assert exc.pid is not None and exc.ip and exc.rank is not None
    assert exc.pid != os.getpid() or exc.rank == 0
