"""shutdown() then init() again in the same driver, three times; old refs are lost, not hung."""

import hpcray as ray
from hpcray import exceptions


@ray.remote
def square(x):
    return x * x


assert not ray.is_initialized()
context = ray.get_runtime_context()  # like Ray 2.60: asking for the context starts a session
assert ray.is_initialized() and context.get_job_id()
ray.shutdown()
assert not ray.is_initialized()

old = None
for round_number in range(3):
    ray.init()
    assert ray.is_initialized()
    assert ray.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
    assert ray.get(ray.put(round_number)) == round_number
    if old is not None:
        try:
            ray.get(old, timeout=10)
            raise AssertionError("a ref from an ended session returned a value")
        except exceptions.ObjectLostError as exc:
            assert "earlier session" in str(exc), exc
    old = square.remote(3)
    ray.get(old)
    ray.shutdown()
    assert not ray.is_initialized()
    for call in (lambda: ray.get(old, timeout=10), lambda: ray.wait([old], timeout=1),
                 lambda: ray.cancel(old)):
        try:  # no session: a clear error, and no new session started behind the caller's back
            call()
            raise AssertionError("a call on a ref of an ended session did not raise")
        except exceptions.RaySystemError as exc:
            assert "not initialized" in str(exc) and "shutdown()" in str(exc), exc
        assert not ray.is_initialized()
print("REINIT_OK", flush=True)
