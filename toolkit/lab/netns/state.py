"""The state directory of a ``netns`` lab: what exists, so ``down`` works from any process, also after a crash.

``/run/natkit/labs/PREFIX/`` (tmpfs: gone after a reboot, like the namespaces) holds
``state.json`` and the logs of the lab's processes (``logs/HOST-SERVICE.log``) and files they need
(a control server's database, the DERP map). ``state.json`` is written *before* anything is
created (the namespaces the lab will make) and rewritten atomically (write, then rename) after
each change: the namespaces that exist, the processes started with their pid and the start time the
kernel records for them (``/proc/PID/stat`` field 22), so a recycled pid is never killed.

A lab whose state directory is lost is still found by its namespaces' ``nk-PREFIX-`` prefix
(:func:`sweep_candidates`), skipping namespaces that another lab's state file claims (prefixes may
nest: ``nk-a-b-x`` may be lab ``a``'s element ``b-x`` or lab ``a-b``'s element ``x``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_ROOT = Path(os.environ.get("NATKIT_LAB_STATE", "/run/natkit/labs"))
STATE_FILE = "state.json"


@dataclass
class ProcessRecord:
    """A process the lab started: where, what, and how to recognise it again."""

    pid: int
    host: str
    what: str  # "stun-server", "run", ...
    argv: list[str]
    log: str = ""
    start_time: int = 0  # /proc/PID/stat starttime (clock ticks after boot)

    def alive(self) -> bool:
        """Whether this very process still runs (same pid *and* same start time)."""
        return process_start_time(self.pid) == self.start_time and self.start_time != 0


@dataclass
class LabState:
    """Contents of ``state.json``."""

    prefix: str
    backend: str = "netns"
    status: str = "creating"  # creating -> up -> (deleted)
    owner_pid: int = 0
    created: float = 0.0
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    topology: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LabState:
        procs = [ProcessRecord(**p) for p in obj.get("processes", [])]
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__ and k != "processes"}
        return cls(**known, processes=procs)


def process_start_time(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat`` (0 if there is no such process)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = raw[raw.rfind(")") + 2 :].split()  # the command name may contain spaces and parentheses
    return int(fields[19]) if len(fields) > 19 else 0


class StateDir:
    """One lab's state directory (see the module docstring)."""

    def __init__(self, prefix: str, root: Path | None = None) -> None:
        self.prefix = prefix
        self.path = (root or STATE_ROOT) / prefix

    @property
    def file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def exists(self) -> bool:
        return self.file.exists()

    def load(self) -> LabState | None:
        """The recorded state, or None if there is none (or it is unreadable: treated as lost)."""
        try:
            return LabState.from_json(json.loads(self.file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, state: LabState) -> None:
        """Write ``state.json`` atomically."""
        self.logs.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(state), indent=1))
        os.replace(tmp, self.file)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def new_state(prefix: str, namespaces: list[str], topology: dict[str, Any]) -> LabState:
    return LabState(prefix, owner_pid=os.getpid(), created=time.time(), namespaces=namespaces, topology=topology)


def all_states(root: Path | None = None) -> list[LabState]:
    """Every recorded lab, oldest first."""
    base = root or STATE_ROOT
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(base.iterdir()):
            state = StateDir(entry.name, base).load()
            if state is not None:
                found.append(state)
    return sorted(found, key=lambda s: s.created)


def claimed_elsewhere(prefix: str, root: Path | None = None) -> set[str]:
    """Namespaces that the state files of labs other than ``prefix`` list."""
    return {ns for s in all_states(root) if s.prefix != prefix for ns in s.namespaces}


def sweep_candidates(prefix: str, namespaces: list[str], root: Path | None = None) -> list[str]:
    """Namespaces named ``nk-PREFIX-*`` that no *other* lab's state file claims."""
    claimed = claimed_elsewhere(prefix, root)
    start = f"nk-{prefix}-"
    return [ns for ns in namespaces if ns.startswith(start) and ns not in claimed]


__all__ = [
    "STATE_ROOT",
    "LabState",
    "ProcessRecord",
    "StateDir",
    "all_states",
    "claimed_elsewhere",
    "new_state",
    "process_start_time",
    "sweep_candidates",
]
