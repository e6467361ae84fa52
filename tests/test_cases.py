"""Every case module, in every launch mode (see conftest.py)."""

import pytest

from conftest import check_mpi_case, case_names
from cases.helpers import CaseSkipped, run_case
from cases import (actors, arena, cancel, collective, dag, errors, failures, generators, handoff, hosts, hosts_p2p,
                   mpi_use, objects, observe, options, placement, ray_compat, resources, tasks, waiting)

MODULES = {"tasks": tasks, "errors": errors, "options": options, "resources": resources,
           "waiting": waiting, "actors": actors, "objects": objects, "cancel": cancel, "arena": arena,
           "hosts": hosts, "hosts_p2p": hosts_p2p, "placement": placement, "handoff": handoff,
           "mpi_use": mpi_use, "failures": failures, "generators": generators, "observe": observe,
           "collective": collective, "ray_compat": ray_compat, "dag": dag}
PARAMS = [(m, c) for m, module in MODULES.items() for c in case_names(module)]


@pytest.fixture(scope="module")
def sessions():
    """Single-rank sessions, one per case module's environment, opened on first use."""
    import os
    import tempfile

    import hpcray
    state = {"current": None, "saved": {}}
    os.environ.setdefault("CASE_TMP", tempfile.mkdtemp(prefix="hpcray-case-"))

    def close():
        hpcray.shutdown()
        for k, v in state["saved"].items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def open_for(module_name):
        if state["current"] == module_name:
            return
        if state["current"] is not None:
            close()
        env = getattr(MODULES[module_name], "ENV", {})
        state["saved"] = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        hpcray.init()
        state["current"] = module_name

    yield open_for
    if state["current"] is not None:
        close()


@pytest.mark.parametrize("module_name,case", PARAMS)
def test_single_rank(module_name, case, sessions):
    sessions(module_name)
    try:
        run_case(getattr(MODULES[module_name], case))
    except CaseSkipped as why:
        pytest.skip(str(why))


@pytest.mark.parametrize("module_name,case", PARAMS)
def test_mpi(module_name, case):
    check_mpi_case(module_name, case, env=getattr(MODULES[module_name], "ENV", {}))


@pytest.mark.parametrize("module_name,case", PARAMS)
def test_spawn(module_name, case):
    check_mpi_case(module_name, case, env=getattr(MODULES[module_name], "ENV", {}), launch="spawn")


def test_a_case_that_leaves_an_actor_alive_fails(sessions):
    """The check that keeps cases from leaking into each other can fail."""
    import hpcray
    sessions("tasks")
    kept = []

    @hpcray.remote(num_cpus=1)
    class Holder:
        def ready(self):
            return True

    def case_leaky():
        kept.append(Holder.remote())
        assert hpcray.get(kept[0].ready.remote())

    with pytest.raises(AssertionError, match="case_leaky left resources held .*CPU"):
        run_case(case_leaky, settle_s=0.5)
    hpcray.kill(kept.pop())
    run_case(lambda: None)  # the job is free again
