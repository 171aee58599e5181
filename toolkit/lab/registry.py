"""Backends by name, scenario files by name, and the state a persistent lab leaves for other shells.

:data:`BACKENDS` maps a backend name to ``module:Class``; the module is imported only when the
backend is used, so ``import toolkit.lab`` stays cheap and a backend that is missing (not written
yet, or its module fails to import) is one clear :class:`~toolkit.errors.UsageError`:
``backend 'docker' is not available: ...``.

Scenarios are the ``*.yaml`` files in ``labs/`` next to the ``toolkit`` package (or the directory
in ``$NATKIT_LABS``); ``open_lab("easy-easy")`` and ``open_lab("path/to/my-lab.yaml")`` both work.

Labs that outlive the process that started them (``netns``, ``docker``: ``Lab.persistent``) are
recorded in ``/run/natkit/labs/NAME/lab.json`` (root ``$NATKIT_LAB_STATE``): backend, seed,
scenario and the full topology, so ``natkit lab down NAME`` and ``status`` rebuild the same
:class:`~toolkit.lab.backend.Lab` in another shell. Backends may keep their own files in that
directory (:func:`state_dir`).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from toolkit.errors import UsageError
from toolkit.lab.backend import PREFIX_RE, Lab
from toolkit.lab.topology import Topology

BACKENDS: dict[str, str] = {
    "sim": "toolkit.lab.sim:SimLab",
    "netns": "toolkit.lab.netns:NetnsLab",
    "docker": "toolkit.lab.docker:DockerLab",
}
DEFAULT_BACKEND = "sim"
STATE_FILE = "lab.json"


class Scenario(NamedTuple):
    """A scenario file in ``labs/``."""

    name: str
    path: Path
    description: str


def labs_dir() -> Path:
    """Where the scenario files live: ``$NATKIT_LABS``, else ``labs/`` beside the ``toolkit`` package."""
    env = os.environ.get("NATKIT_LABS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "labs"


def state_root() -> Path:
    return Path(os.environ.get("NATKIT_LAB_STATE", "/run/natkit/labs"))


def state_dir(name: str) -> Path:
    """The directory of persistent lab ``name`` (not created here)."""
    if not PREFIX_RE.match(name):
        raise UsageError(f"lab name {name!r}: use 1-20 lowercase letters, digits or '-', starting with a letter")
    return state_root() / name


def backend_class(name: str) -> type[Lab]:
    """The :class:`Lab` subclass of backend ``name`` (imported now)."""
    if name not in BACKENDS:
        raise UsageError(f"unknown lab backend {name!r}; backends: {', '.join(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"backend {name!r} is not available: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Lab)):
        raise UsageError(f"backend {name!r} is not available: {module_name} has no Lab class {class_name}")
    return cls


def list_scenarios(directory: Path | None = None) -> list[Scenario]:
    """The scenario files, sorted by name, with their one-line descriptions."""
    root = directory or labs_dir()
    found = []
    for path in sorted(root.glob("*.yaml"), key=lambda p: p.stem):
        found.append(Scenario(path.stem, path, Topology.from_yaml(path).description))
    return found


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario by name (``easy-easy``) or by file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in str(name_or_path):
        if not path.is_file():
            raise UsageError(f"lab file {path} does not exist")
        return path
    candidate = labs_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = ", ".join(sorted(p.stem for p in labs_dir().glob("*.yaml"))) or "(none)"
    raise UsageError(f"no lab scenario {str(name_or_path)!r}; scenarios: {names} (or give a .yaml file)")


def load_topology(topology_or_path: Topology | str | Path) -> Topology:
    """A topology as given, or loaded from a scenario name or file."""
    if isinstance(topology_or_path, Topology):
        return topology_or_path
    return Topology.from_yaml(scenario_path(topology_or_path))


def open_lab(topology_or_path: Topology | str | Path, backend: str = DEFAULT_BACKEND, **kw: Any) -> Lab:
    """A (not yet started) lab of the topology on ``backend``; ``kw`` go to the backend (name_prefix, seed, ...)."""
    return backend_class(backend)(load_topology(topology_or_path), **kw)


# --- state of persistent labs ------------------------------------------------------------------------


def save_state(lab: Lab, scenario: str = "", extra: dict[str, Any] | None = None) -> Path:
    """Record ``lab`` in its state directory so other shells can find it; returns the state file.

    ``extra``: backend-specific facts for later shells (docker: the engine ``natkit lab up`` started)."""
    directory = state_dir(lab.name)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "name": lab.name,
        "backend": lab.backend,
        "seed": lab.seed,
        "scenario": scenario,
        "topology": lab.topology.to_dict(),
        **(extra or {}),
    }
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_state(name: str) -> dict[str, Any]:
    """The recorded state of persistent lab ``name``."""
    path = state_dir(name) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        left = _netns_state(name)  # a netns lab opened from Python (a notebook) whose process died
        if left is not None:
            return left
        running = ", ".join(list_states()) or "none"
        raise UsageError(f"no lab named {name!r} is up (labs up: {running})") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the lab's state ({exc})") from None
    if not isinstance(state, dict) or "backend" not in state or "topology" not in state:
        raise UsageError(f"{path}: not a natkit lab state file")
    return state


def _netns_state(name: str) -> dict[str, Any] | None:
    """A lab.json-like state from the netns backend's own ``state.json`` (written by every netns lab, also one
    opened from Python rather than by ``natkit lab up``), so ``natkit lab down`` can remove what it left."""
    from toolkit.lab.netns.state import STATE_FILE as NETNS_STATE

    try:
        obj = json.loads((state_dir(name) / NETNS_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or not obj.get("topology"):
        return None
    return {"backend": "netns", "topology": obj["topology"], "seed": 0}


def attach(name: str) -> Lab:
    """The :class:`Lab` object of persistent lab ``name``, rebuilt from its state file (for down/status)."""
    state = read_state(name)
    topology = Topology.from_dict(state["topology"])
    return backend_class(str(state["backend"]))(topology, name_prefix=name, seed=int(state.get("seed", 0)))


def remove_state(name: str) -> None:
    shutil.rmtree(state_dir(name), ignore_errors=True)


def list_states() -> list[str]:
    """Names of the persistent labs recorded as up."""
    root = state_root()
    if not root.is_dir():
        return []
    from toolkit.lab.netns.state import STATE_FILE as NETNS_STATE

    return sorted({p.parent.name for pattern in (STATE_FILE, NETNS_STATE) for p in root.glob(f"*/{pattern}")})


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Scenario",
    "attach",
    "backend_class",
    "labs_dir",
    "list_scenarios",
    "list_states",
    "load_topology",
    "open_lab",
    "read_state",
    "remove_state",
    "save_state",
    "scenario_path",
    "state_dir",
    "state_root",
]
