"""remote() and .options() validation, and init() re-entry, in both launch modes."""

import hpcray as ray
from hpcray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from .helpers import raises


def f():
    return 1


def case_decorator_forms():
    assert ray.get(ray.remote(f).remote()) == 1
    assert ray.get(ray.remote(num_cpus=1)(f).remote()) == 1
    raises(TypeError, ray.remote)
    raises(TypeError, ray.remote, 1, 2)


def case_unknown_option_names_it():
    assert "num_cpu" in str(raises(ValueError, lambda: ray.remote(num_cpu=1)(f)))
    exc = raises(ValueError, lambda: ray.remote(f).options(bogus=True))
    assert "bogus" in str(exc)


def case_wrong_types_name_the_option():
    for key, value in [("num_cpus", "1"), ("num_gpus", [1]), ("resources", 3), ("max_retries", 1.5),
                       ("num_returns", 1.0), ("runtime_env", "x"), ("memory", "big"),
                       ("retry_exceptions", "yes"), ("accelerator_type", 3), ("max_calls", "2"),
                       ("num_cpus", True)]:
        exc = raises(TypeError, lambda: ray.remote(**{key: value})(f))
        assert key in str(exc), (key, str(exc))


def case_bad_values_name_the_option():
    for key, value in [("num_cpus", -1), ("num_gpus", -0.5), ("memory", -1), ("max_retries", -2),
                       ("num_returns", -1), ("num_gpus", 1.5), ("num_cpus", 0.00001),
                       ("retry_exceptions", [int]), ("scheduling_strategy", "FAST")]:
        exc = raises(ValueError, lambda: ray.remote(**{key: value})(f))
        assert key in str(exc) or str(value) in str(exc), (key, str(exc))


def case_resources_dict_rules():
    raises(ValueError, lambda: ray.remote(resources={"CPU": 1})(f), match="num_cpus")
    raises(ValueError, lambda: ray.remote(resources={"GPU": 1})(f), match="num_gpus")
    raises(ValueError, lambda: ray.remote(resources={"custom": -1})(f), match="custom")
    raises(ValueError, lambda: ray.remote(resources={"bundle": 1})(f), match="bundle")
    raises(ValueError, lambda: ray.remote(resources={1: 1})(f))


def case_max_calls_not_in_options():
    remote_f = ray.remote(f)
    raises(ValueError, lambda: remote_f.options(max_calls=2), match="max_calls")


def case_fractional_and_zero_resources_accepted():
    assert ray.get(ray.remote(num_cpus=0.5)(f).remote()) == 1
    assert ray.get(ray.remote(num_cpus=0)(f).remote()) == 1
    assert ray.get(ray.remote(f).options(num_cpus=0.25, memory=1).remote()) == 1


def case_runtime_env_unsupported_fields():
    raises(NotImplementedError, lambda: ray.remote(runtime_env={"pip": ["x"]})(f), match="pip")
    raises(ValueError, lambda: ray.remote(runtime_env={"nonsense": 1})(f), match="nonsense")
    raises(ValueError, lambda: ray.remote(runtime_env={"env_vars": {"A": 1}})(f), match="env_vars")


def case_placement_group_option_must_be_a_placement_group():
    remote_f = ray.remote(f)
    strategy = PlacementGroupSchedulingStrategy(object())
    raises(TypeError, lambda: remote_f.options(scheduling_strategy=strategy).remote(),
           match="placement_group")
    raises(TypeError, lambda: remote_f.options(placement_group=object()).remote(), match="placement_group")


def case_streaming_needs_a_generator_function():
    def gen():
        yield 1
    assert [ray.get(ref) for ref in ray.remote(gen).remote()] == [1]
    raises(ValueError, lambda: ray.remote(num_returns="streaming")(f), match="generator")


def case_reinit_raises_unless_ignored():
    raises(RuntimeError, ray.init, match="ignore_reinit_error")
    info = ray.init(ignore_reinit_error=True)
    assert info is not None and ray.is_initialized()
    raises(TypeError, ray.init, ignore_reinit_error=True, not_a_keyword=1)


def case_node_affinity_unknown_node_hard_fails():
    from hpcray import exceptions
    strategy = NodeAffinitySchedulingStrategy("ff" * 28, soft=False)
    ref = ray.remote(f).options(scheduling_strategy=strategy).remote()
    raises(exceptions.TaskUnschedulableError, ray.get, ref, timeout=10)
    soft = NodeAffinitySchedulingStrategy("ff" * 28, soft=True)
    assert ray.get(ray.remote(f).options(scheduling_strategy=soft).remote(), timeout=10) == 1
