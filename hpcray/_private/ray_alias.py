"""``import ray`` resolved to hpcray, for ``python -m hpcray app.py`` (Ray programs unchanged).

A finder first on ``sys.meta_path`` answers ``ray`` and ``ray.X`` with ``hpcray`` and
``hpcray.X`` (the same module objects, so ``ray.get is hpcray.get``), ``ray.cloudpickle`` with
cloudpickle; a Ray module hpcray does not have is a ``ModuleNotFoundError`` that says so. An
installed Ray is never touched: the finder answers before the path finders look. The setting
``HPCRAY_RAY_ALIAS=1`` (which ``python -m hpcray`` sets) makes every process of the job install it
when it imports hpcray: spawned workers, and modules of the program that a task imports there.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any, Optional

#: Ray modules that are other modules here
SPECIAL = {"ray.cloudpickle": "cloudpickle"}


class RayAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if fullname != "ray" and not fullname.startswith("ray."):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        name = SPECIAL.get(spec.name, "hpcray" + spec.name[len("ray"):])
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                raise ModuleNotFoundError(
                    f"No module named {spec.name!r}: this program runs on hpcray (python -m hpcray), "
                    f"which has no {name} (the README lists what it provides of Ray)",
                    name=spec.name) from None
            raise

    def exec_module(self, module: Any) -> None:
        pass  # the hpcray module is already executed


def install() -> None:
    """Resolve ``ray`` to hpcray in this process from now on (a Ray module imported before
    stays Ray's: call this first)."""
    if any(isinstance(finder, RayAlias) for finder in sys.meta_path):
        return
    imported = [name for name in sys.modules if name == "ray" or name.startswith("ray.")]
    if imported:
        raise RuntimeError(f"Ray's own modules are imported already ({', '.join(sorted(imported)[:3])}): "
                           "hpcray cannot stand in for them in this process")
    sys.meta_path.insert(0, RayAlias())
