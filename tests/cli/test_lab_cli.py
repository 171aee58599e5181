"""`natkit lab list|up|down|status`: the listing, one-line errors (exit 2), and the state a persistent lab
leaves for other shells, driven through an in-memory backend registered under the name `netns`.

Plus the real sim backend in a real process, stopped by SIGINT; netns and docker up/down through this command
are tested with those backends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.errors import NatkitError, UsageError
from toolkit.lab import registry
from toolkit.lab.backend import Capture, ElementStatus, Lab, LabStatus, NatMapping, RunResult, ServiceHandle
from toolkit.lab.nat import PRESETS
from toolkit.lab.topology import ServiceSpec

LABS = Path(__file__).resolve().parents[2] / "labs"


class MemoryLab(Lab):
    """A persistent backend whose only resource is a marker file in the lab's state directory."""

    backend = "netns"
    persistent = True
    fail_up = False
    calls: list[str] = []  # noqa: RUF012 - shared on purpose: instances in other "shells" record here

    @property
    def marker(self) -> Path:
        return registry.state_dir(self.name) / "memory-up"

    async def up(self) -> None:
        self.calls.append(f"up {self.name}")
        self.marker.write_text("half" if self.fail_up else "up")
        if self.fail_up:
            raise NatkitError("memory lab: failed half-way")

    async def down(self) -> None:
        self.calls.append(f"down {self.name}")
        self.marker.unlink(missing_ok=True)

    def status(self) -> LabStatus:
        up = self.marker.exists()
        hosts = tuple(ElementStatus(h.name, "host", up, (f"{h.v4}/24 eth0",)) for h in self.topology.hosts)
        return LabStatus(self.name, self.backend, up, hosts)

    async def run(self, host: str, argv: Sequence[str], *, timeout: float = 30.0) -> RunResult:
        raise UsageError("memory lab runs nothing")

    async def start_service(self, host: str, spec: ServiceSpec) -> ServiceHandle:
        raise UsageError("memory lab runs nothing")

    async def open_capture(self, element: str, interface: str) -> Capture:
        return Capture(element, interface)

    async def nat_table(self, router: str) -> list[NatMapping]:
        self._nat_router(router)
        return []

    async def logs(self, host: str) -> AsyncIterator[str]:
        self._host(host)
        yield f"{host}: no logs"


class ForegroundLab(MemoryLab):
    """The same, living only in the `natkit lab up` process (as the sim does)."""

    backend = "sim"
    persistent = False
    slept: list[float] = []  # noqa: RUF012

    @property
    def marker(self) -> Path:
        return Path(registry.state_root()) / f"{self.name}-foreground"

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("NATKIT_LAB_STATE", str(tmp_path))
    monkeypatch.setitem(registry.BACKENDS, "netns", f"{__name__}:MemoryLab")
    monkeypatch.setitem(registry.BACKENDS, "sim", f"{__name__}:ForegroundLab")
    MemoryLab.calls.clear()
    MemoryLab.fail_up = False
    yield tmp_path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["lab", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_scenarios_presets_and_backends(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "list")
    assert code == 0 and err == ""
    for path in LABS.glob("*.yaml"):
        assert f"  {path.stem} " in out
    assert "easy-hard            relayed  alice behind an easy NAT" in out
    for name in PRESETS:
        assert f"  {name} " in out
    assert "backends: sim, netns, docker" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "easy-medium"], "natkit: error: no lab scenario 'easy-medium'; scenarios: broken-router"),
        (["up", "missing.yaml"], "natkit: error: lab file missing.yaml does not exist"),
        (["down", "nothing-here"], "natkit: error: no lab named 'nothing-here' is up (labs up: none)"),
        (["status", "nothing-here"], "natkit: error: no lab named 'nothing-here' is up"),
        (["down", "Bad_Name"], "natkit: error: lab name 'Bad_Name'"),
    ],
)
def test_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], message: str
) -> None:
    monkeypatch.setenv("NATKIT_LAB_STATE", str(tmp_path))
    code, _out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1


def test_unknown_backend_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lab", "up", "easy-easy", "--backend", "vm"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("natkit: error: argument --backend: invalid choice: 'vm'")


def test_missing_backend_is_a_clear_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BACKENDS, "docker", "toolkit.lab.not_written_yet:DockerLab")
    code, _out, err = _run(capsys, "up", "easy-easy", "--backend", "docker")
    assert code == 2
    assert err == ("natkit: error: backend 'docker' is not available: No module named 'toolkit.lab.not_written_yet'\n")


def test_persistent_lab_up_status_down_from_another_shell(capsys: pytest.CaptureFixture[str], memory: Path) -> None:
    code, out, err = _run(capsys, "up", "easy-easy", "--backend", "netns", "--name", "t1", "--seed", "7")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "lab t1 (netns): up"
    assert "natkit lab: t1 is up; `natkit lab down t1` removes it" in out
    state = json.loads((memory / "t1" / "lab.json").read_text())
    assert (state["backend"], state["seed"], state["topology"]["name"]) == ("netns", 7, "easy-easy")
    assert state["scenario"].endswith("labs/easy-easy.yaml")

    code, _out, err = _run(capsys, "up", "same-lan", "--backend", "netns", "--name", "t1")
    assert code == 2 and "a lab named 't1' is already up" in err

    code, out, _err = _run(capsys, "status", "t1")
    assert code == 0 and out.startswith("lab t1 (netns): up\n") and "198.51.100.10/24 eth0" in out
    code, out, _err = _run(capsys, "status")
    assert code == 0 and out.startswith("lab t1 (netns): up")

    code, out, _err = _run(capsys, "down", "t1")
    assert (code, out) == (0, "natkit lab: t1 down\n")
    assert not (memory / "t1").exists()
    assert MemoryLab.calls == ["up t1", "down t1"]  # down ran on a Lab rebuilt from the state file
    code, out, _err = _run(capsys, "status")
    assert code == 0 and out.startswith("natkit lab: no netns or docker lab is up")


def test_failed_up_cleans_up(capsys: pytest.CaptureFixture[str], memory: Path) -> None:
    MemoryLab.fail_up = True
    code, _out, err = _run(capsys, "up", "cgnat", "--backend", "netns")
    assert code == 1 and err == "natkit: error: memory lab: failed half-way\n"
    assert MemoryLab.calls == ["up cgnat", "down cgnat"]
    assert not (memory / "cgnat").exists()


def test_duration_is_for_foreground_labs(capsys: pytest.CaptureFixture[str], memory: Path) -> None:
    code, _out, err = _run(capsys, "up", "cgnat", "--backend", "netns", "--duration", "3")
    assert code == 2 and "--duration is for the sim backend" in err
    assert MemoryLab.calls == []


def test_foreground_lab_runs_for_duration_then_goes_down(capsys: pytest.CaptureFixture[str], memory: Path) -> None:
    ForegroundLab.slept.clear()
    code, out, err = _run(capsys, "up", "same-lan", "--name", "fg", "--duration", "0.3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "lab fg (sim): up"
    assert "natkit lab: fg runs in this process (sim); Ctrl-C takes it down" in lines
    assert lines[-1] == "natkit lab: fg down"
    assert MemoryLab.calls == ["up fg", "down fg"]
    assert 0.29 <= sum(ForegroundLab.slept) <= 0.31  # virtual time advanced as far as the wall clock
    assert not (memory / "fg").exists() and registry.list_states() == []


def test_sim_lab_runs_until_sigint() -> None:
    """The real sim backend in a real process: Ctrl-C (SIGINT) takes the lab down, exit 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "lab", "up", "same-lan", "--name", "sigint-test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "Ctrl-C takes it down" in line:
                break
        assert lines[0] == "lab sigint-test (sim): up", lines
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (0, "")
    assert out.splitlines()[-1] == "natkit lab: sigint-test down"
