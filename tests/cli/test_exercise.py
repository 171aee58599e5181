"""`natkit exercise list|solve|check` for real: the command in its own process, notebooks run in real kernels.

``check`` grades a solved copy (exit 0, full points), the untouched exercise (exit 1, the checks' helpful
messages) and a copy whose check cell was tampered with (restored from the stored exercise, as nbgrader's
autograder does); bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

EXERCISES = Path(__file__).resolve().parents[2] / "labs" / "exercises"
EX01 = EXERCISES / "01-public-endpoint.ipynb"


def natkit(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "exercise", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_line_error(res: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("natkit: error: "), res.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_list_names_each_exercise_with_points_tasks_and_checks() -> None:
    res = natkit("list")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for line in (
        "01-public-endpoint   3 points  Exercise 01: find your public endpoint",
        "tasks:  01-task-stun",
        "checks: 01-check-endpoint (3)",
        "tasks:  05-task-diagnose, 05-task-fix",
        "checks: 05-check-hard-side (2), 05-check-direct (3)",
    ):
        assert line in out, (line, out)
    assert [ln.split()[0] for ln in out.splitlines() if ln[:2].isdigit()] == [
        "01-public-endpoint", "02-classify-nat", "03-hole-punch", "04-broken-router", "05-why-relayed"
    ]  # fmt: skip


def test_solve_writes_the_solved_notebook_and_never_overwrites_without_force(tmp_path: Path) -> None:
    res = natkit("solve", "01", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    written = tmp_path / "01-public-endpoint-solved.ipynb"
    assert f"to {written.name}" in res.stdout
    nb = nbformat.read(written, as_version=4)
    [task] = [c for c in nb.cells if c.metadata["nbgrader"]["solution"]]
    assert "STUN(txid=os.urandom(12))" in task.source and "YOUR CODE HERE" not in task.source
    assert all(c.get("outputs", []) == [] for c in nb.cells)

    written.write_text("mine")
    one_line_error(natkit("solve", "01-public-endpoint", cwd=tmp_path), "exists", "--force")
    assert written.read_text() == "mine"
    assert natkit("solve", "01-public-endpoint", "--force", cwd=tmp_path).returncode == 0
    assert nbformat.read(written, as_version=4).cells

    res = natkit("solve", "5", "--nbgrader", "-o", str(tmp_path / "src.ipynb"))
    assert res.returncode == 0 and "ClearSolutions.code_stub" in res.stdout, res
    tasks = [
        c.source for c in nbformat.read(tmp_path / "src.ipynb", as_version=4).cells if "BEGIN SOLUTION" in c.source
    ]
    assert len(tasks) == 2 and all(t.startswith("# YOUR CODE HERE") and t.endswith("### END SOLUTION") for t in tasks)


def test_check_a_solved_copy_earns_every_point(tmp_path: Path) -> None:
    assert natkit("solve", "01", "-o", str(tmp_path / "mine.ipynb")).returncode == 0
    res = natkit("check", str(tmp_path / "mine.ipynb"), "--backend", "sim", "--timeout", "120")
    assert res.returncode == 0, (res.stdout, res.stderr)
    lines = res.stdout.splitlines()
    assert lines[0].startswith("✓ 01-check-endpoint  3/3  alice's public endpoint is 203.0.113.1:"), lines
    assert lines[-1].startswith("total 3/3 points: 1 of 1 check(s) pass (01-public-endpoint, "), lines
    progress = res.stderr.splitlines()
    assert progress[0].startswith(f"natkit exercise: running {tmp_path / 'mine.ipynb'} on sim in "), progress
    assert "natkit exercise: [4/6] 01-check-endpoint ..." in progress
    assert any(p.startswith("natkit exercise: [6/6] 01-teardown ok (") for p in progress), progress


def test_check_the_untouched_exercise_fails_with_the_helpful_message(tmp_path: Path) -> None:
    copy = Path(shutil.copy(EX01, tmp_path / "student.ipynb"))
    res = natkit("check", str(copy))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stdout.splitlines() == [
        "✗ 01-check-endpoint  0/3  AssertionError: your probe never left alice: did you send a STUN Binding "
        "request to the STUN server's address 198.51.100.10:3478?",
        res.stdout.splitlines()[-1],
    ]
    assert res.stdout.splitlines()[-1].startswith("total 0/3 points: 0 of 1 check(s) pass (01-public-endpoint, ")
    assert "01-check-endpoint failed: AssertionError" in res.stderr


def test_check_restores_a_tampered_check_cell_and_names_failing_task_cells(tmp_path: Path) -> None:
    nb = nbformat.read(EX01, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata["nbgrader"]["grade_id"]
        if gid == "01-check-endpoint":
            cell.source = 'print("✓ full marks, trust me")'
        if gid == "01-task-stun":
            cell.source = "MY_PUBLIC_ENDPOINT = undefined_name"
    nbformat.write(nb, tmp_path / "cheat.ipynb")
    res = natkit("check", str(tmp_path / "cheat.ipynb"))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "restored the locked cell(s) 01-check-endpoint from 01-public-endpoint.ipynb" in res.stderr
    assert "  (cell 01-task-stun raised NameError: name 'undefined_name' is not defined)" in res.stdout.splitlines()
    assert "✗ 01-check-endpoint  0/3  NameError: name 'MY_PUBLIC_ENDPOINT' is not defined" in res.stdout  # not ✓


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    one_line_error(natkit("check", str(tmp_path / "nope.ipynb")), "nope.ipynb: no such notebook")
    not_exercise = EXERCISES.parent.parent / "notebooks" / "01-nat-behaviours.ipynb"
    one_line_error(natkit("check", str(not_exercise)), "not an exercise (no nbgrader check cell)")
    (tmp_path / "broken.ipynb").write_text("{ not json")
    one_line_error(natkit("check", str(tmp_path / "broken.ipynb")), "broken.ipynb: not a Jupyter notebook")
    one_line_error(natkit("check", str(EX01), "--timeout", "0"), "--timeout 0: give a positive number")
    one_line_error(natkit("check", str(EX01), "--backend", "vm"), "invalid choice: 'vm'")
    one_line_error(natkit("solve", "9"), "no exercise '9' (exercises: 01-public-endpoint, ")
    one_line_error(natkit("solve", "01", "-o", str(tmp_path / "no" / "dir.ipynb")), "no such directory")


@pytest.mark.parametrize("args", [(), ("check",), ("solve",)])
def test_missing_arguments_exit_2(args: tuple[str, ...]) -> None:
    assert natkit(*args).returncode == 2
