"""Every graded exercise (labs/exercises/NN-name.ipynb) runs, each in a fresh Jupyter kernel
(:func:`toolkit.lab.exercises.execute`, the runner of ``natkit exercise check``):

* with the reference solution (labs/exercises/solutions/NN-name.py: one ``# %% GRADE_ID`` section per task
  cell, merged by :func:`toolkit.lab.exercises.solved`): every cell runs, every check passes, full points;
* untouched, as a student gets it: every check cell fails with an AssertionError carrying the helpful message
  below, earns nothing, and no other cell fails (the setup and the teardown work without the student's code).

Each on ``sim`` (all five), on ``netns`` (as root: 01-04 solved, 01-03 untouched; the lab must be gone
afterwards) and on ``docker`` (the two cheapest, in containers on the suite's offline-built images).

The notebooks are stored without outputs and carry nbgrader metadata (schema 3): task cells are solution
cells, check cells are graded, locked cells are read-only. tests/labs/test_nbgrader.py runs nbgrader itself.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.support import require_root, require_tool
from toolkit.errors import UsageError
from toolkit.lab import exercises
from toolkit.lab.exercises import Grade, nbgrader_meta

EXERCISES = Path(__file__).resolve().parents[2] / "labs" / "exercises"
TIMEOUT = 240.0  # seconds one cell may run (04/05 run two nodes on a real backend)

# what the check cells of the untouched exercises say (grade_id -> a part of the message)
UNTOUCHED = {
    "01-public-endpoint": {"01-check-endpoint": "your probe never left alice: did you send a STUN Binding request"},
    "02-classify-nat": {"02-check-classification": "no STUN request crossed r1: run the RFC 5780 tests"},
    "03-hole-punch": {"03-check-punched": "bob never sent anything to alice's public address"},
    "04-broken-router": {"04-check-direct": "alice and bob still end on derp (StayOnDERP"},
    "05-why-relayed": {
        "05-check-hard-side": "no RFC 5780 test crossed r1",
        "05-check-direct": "alice and bob still end on derp (StayOnDERP",
    },
}
# Wall times (2 cores) on netns: 01-03 3-11 s a run; 04 and 05 25-60 s (two nodes run until they settle, and
# untouched they end on DERP only after the probe retries). Untouched 04/05 fail exactly as on sim, so on netns
# they run with the solution only, 05 (the slowest) only under `make notebooks BACKEND=netns`. On docker the two
# cheapest run (01: 6-8 s, 02: 9-13 s; 03: 10-16 s); `make notebooks BACKEND=docker` runs all, both ways.
NETNS_UNTOUCHED = ("01-public-endpoint", "02-classify-nat", "03-hole-punch")
NETNS_SOLVED = ("01-public-endpoint", "02-classify-nat", "03-hole-punch", "04-broken-router")  # 05: 40-60 s
DOCKER = ("01-public-endpoint", "02-classify-nat")
if os.environ.get("NATKIT_TEST_ALL_BACKENDS") == "1":  # `make notebooks BACKEND=...`: every exercise, both ways
    NETNS_UNTOUCHED = NETNS_SOLVED = DOCKER = tuple(sorted(UNTOUCHED))


def _cases(untouched: bool) -> list[Any]:
    slow = [pytest.mark.root, pytest.mark.slow]
    netns = NETNS_UNTOUCHED if untouched else NETNS_SOLVED
    cases = [pytest.param(stem, "sim", id=f"{stem}-sim") for stem in sorted(UNTOUCHED)]
    cases += [pytest.param(stem, "netns", id=f"{stem}-netns", marks=slow) for stem in netns]
    cases += [pytest.param(stem, "docker", id=f"{stem}-docker", marks=slow) for stem in DOCKER]
    return cases


@pytest.fixture(scope="module")
def docker_ready() -> Iterator[None]:
    """An engine and the offline-built images (as tests/lab/docker/conftest.py); the kernel's DockerLab finds both."""
    require_root()
    for tool in ("dockerd", "docker"):
        require_tool(tool, "docker.io")
    require_tool("debootstrap", "debootstrap")
    from toolkit.lab.docker import engine, images

    found = engine.find_engine()
    started = found or engine.start_engine()
    try:
        images.ensure_images(started, offline=True)
        yield
    finally:
        if found is None:
            engine.stop_engine(started)


@pytest.fixture
def backend_ready(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = request.node.callspec.params["backend"]
    if backend == "netns":
        require_root()
        require_tool("ip", "iproute2")
        require_tool("nft", "nftables")
    elif backend == "docker":
        request.getfixturevalue("docker_ready")
        monkeypatch.setenv("NATKIT_DOCKER_OFFLINE", "1")  # the kernel inherits it: no registry in CI


def _namespaces(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(prefix)}


def run(nb: Any, stem: str, backend: str) -> Grade:
    """Run ``nb`` on ``backend`` in a fresh kernel; on netns, fail if the notebook's lab outlived it."""
    if backend != "sim":
        exercises.set_backend(nb, backend)
    nb.cells.append(nbformat.v4.new_code_cell('import os\nprint("kernel pid", os.getpid())'))
    grade = exercises.execute(nb, cwd=EXERCISES, timeout=TIMEOUT)
    if backend == "netns":
        found = re.search(r"kernel pid (\d+)", exercises.cell_text(nb.cells[-1]))
        assert found, "the kernel never ran the last cell"
        prefix = f"nk-x{stem[:2]}-{int(found[1]) % 100000}-"  # grading.lab_name: x<NN>-<pid % 100000>
        left = _namespaces(prefix)
        for ns in left:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        assert not left, f"the notebook left its lab's namespaces behind: {sorted(left)}"
    return grade


def test_there_are_five_exercises_each_with_a_solution() -> None:
    found = exercises.list_exercises(EXERCISES)
    assert [e.name for e in found] == sorted(UNTOUCHED)
    for ex in found:
        nb = nbformat.read(ex.path, as_version=4)
        nbformat.validate(nb)
        assert ex.tasks and sorted(exercises.solution_sections(ex)) == sorted(ex.tasks), ex
        assert sorted(c.grade_id for c in ex.checks) == sorted(UNTOUCHED[ex.name]), ex
        assert ex.points == sum(nbgrader_meta(c).get("points", 0) for c in nb.cells) > 0
        assert ex.title.startswith(f"Exercise {ex.name[:2]}: "), ex.title
        ids = [nbgrader_meta(c).get("grade_id") for c in nb.cells]
        assert len(set(ids)) == len(ids), f"{ex.name}: grade_ids must be unique (nbgrader keys cells by them)"
        for cell in nb.cells:
            meta = nbgrader_meta(cell)
            assert meta.get("schema_version") == 3 and meta.get("grade_id"), (ex.name, cell.source[:60])
            assert re.fullmatch(r"[A-Za-z0-9_-]+", meta["grade_id"]), meta  # nbgrader's rule for grade_id
            assert meta["locked"] is not meta["solution"], (ex.name, meta)  # task cells editable, the rest locked
            assert not meta.get("task"), "no nbgrader task cells (manually graded): every check is autograded"
            if meta["grade"]:
                assert meta["points"] > 0 and cell.cell_type == "code" and not meta["solution"]
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{ex.name}: stored with outputs"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert params and 'BACKEND = "sim"' in params[0].source, ex.name
        assert params[0] is next(c for c in nb.cells if c.cell_type == "code"), "parameters: the first code cell"


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("backend_ready")
@pytest.mark.parametrize(("stem", "backend"), _cases(untouched=False))
def test_with_the_solution_every_check_passes(stem: str, backend: str) -> None:
    ex = exercises.find_exercise(stem, EXERCISES)
    grade = run(exercises.solved(ex), stem, backend)
    assert grade.errors == (), grade.errors
    assert grade.passed and grade.earned == grade.points == ex.points, grade.checks
    for check in grade.checks:
        assert check.message.startswith("✓"), check
    if stem[:2] in ("04", "05"):
        assert all(f"on {backend}" in c.message for c in grade.checks if c.grade_id.endswith("-direct")), grade


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("backend_ready")
@pytest.mark.parametrize(("stem", "backend"), _cases(untouched=True))
def test_untouched_the_checks_fail_with_a_helpful_message(stem: str, backend: str) -> None:
    ex = exercises.find_exercise(stem, EXERCISES)
    grade = run(exercises.read_notebook(ex.path), stem, backend)
    assert grade.errors == (), grade.errors  # only the check cells fail
    assert grade.earned == 0 and not grade.passed
    got = {c.grade_id: c.message for c in grade.checks}
    assert sorted(got) == sorted(UNTOUCHED[stem]), got
    for gid, expected in UNTOUCHED[stem].items():
        assert got[gid].startswith("AssertionError: ") and expected in got[gid], got[gid]


# --- the library without the network: names, merging, parameters, grading verdicts ---------------------------


def test_exercises_are_found_by_number_or_name_and_unknown_ones_are_named() -> None:
    assert exercises.find_exercise("01", EXERCISES).name == "01-public-endpoint"
    assert exercises.find_exercise("3", EXERCISES).name == "03-hole-punch"
    assert exercises.find_exercise("05-why-relayed.ipynb", EXERCISES).name == "05-why-relayed"
    for bad in ("9", "public-endpoint", "01-public", ""):
        with pytest.raises(UsageError, match=r"no exercise .* \(exercises: 01-public-endpoint, 02-classify-nat"):
            exercises.find_exercise(bad, EXERCISES)


def test_solved_changes_only_the_task_cells_and_the_nbgrader_source_keeps_the_starter() -> None:
    for ex in exercises.list_exercises(EXERCISES):
        original = nbformat.read(ex.path, as_version=4)
        sections = exercises.solution_sections(ex)
        solved, source = exercises.solved(ex), exercises.nbgrader_source(ex)
        for before, after, instructor in zip(original.cells, solved.cells, source.cells, strict=True):
            gid = nbgrader_meta(before).get("grade_id")
            assert after.metadata == before.metadata == instructor.metadata
            if nbgrader_meta(before).get("solution"):
                assert after.source == sections[gid] and sections[gid].strip()
                starter, rest = instructor.source.split(f"\n{exercises.BEGIN}\n")
                assert starter == before.source.rstrip() and rest == f"{sections[gid]}\n{exercises.END}"
            else:
                assert after.source == before.source == instructor.source


def test_set_backend_replaces_the_parameter_and_refuses_what_it_cannot_set() -> None:
    nb = nbformat.read(EXERCISES / "02-classify-nat.ipynb", as_version=4)
    exercises.set_backend(nb, "docker")
    params = next(c for c in nb.cells if c.cell_type == "code").source
    assert 'BACKEND = "docker"' in params and "MYSTERY = 5" in params and "sim" not in params.split("\n")[0]
    with pytest.raises(UsageError, match="unknown backend 'vm': use one of sim, netns, docker"):
        exercises.set_backend(nb, "vm")
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(UsageError, match="no parameters cell setting BACKEND"):
        exercises.set_backend(bare, "netns")


def test_restore_locked_puts_back_the_checks_but_not_the_task_or_the_parameters() -> None:
    master = nbformat.read(EXERCISES / "01-public-endpoint.ipynb", as_version=4)
    student = nbformat.read(EXERCISES / "01-public-endpoint.ipynb", as_version=4)
    by_id = {nbgrader_meta(c)["grade_id"]: c for c in student.cells}
    by_id["01-check-endpoint"].source = 'print("✓ trust me")'
    by_id["01-task-stun"].source = 'MY_PUBLIC_ENDPOINT = "1.2.3.4:5"'
    by_id["01-parameters"].source = by_id["01-parameters"].source.replace("SEED = 1", "SEED = 2")
    assert exercises.restore_locked(student, master) == ["01-check-endpoint"]
    assert "grading.check_public_endpoint" in by_id["01-check-endpoint"].source
    assert (
        by_id["01-task-stun"].source == 'MY_PUBLIC_ENDPOINT = "1.2.3.4:5"'
        and "SEED = 2" in by_id["01-parameters"].source
    )


def _cell(gid: str, *, points: float = 0, outputs: list[Any] | None = None, ran: bool = True) -> Any:
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.metadata["nbgrader"] = {"grade_id": gid, "grade": points > 0, "points": points, "solution": False}
    cell.outputs, cell.execution_count = outputs or [], 1 if ran else None
    return cell


def test_grade_counts_points_as_nbgraders_autograder_does() -> None:
    out = nbformat.v4.new_output
    nb = nbformat.v4.new_notebook(
        cells=[
            _cell("setup", outputs=[out("error", ename="NameError", evalue="name 'x' is not defined", traceback=[])]),
            _cell("ok", points=2, outputs=[out("stream", name="stdout", text="✓ fine\n")]),
            _cell("bad", points=3, outputs=[out("error", ename="AssertionError", evalue="no probe", traceback=[])]),
            _cell("slow", points=1, outputs=[out("error", ename="KeyboardInterrupt", evalue="", traceback=[])]),
            _cell("never", points=4, ran=False),
        ]
    )
    grade = exercises.grade(nb, timed_out=frozenset({"slow"}), note="the kernel died before")
    assert [(c.grade_id, c.earned, c.points) for c in grade.checks] == [
        ("ok", 2, 2), ("bad", 0, 3), ("slow", 0, 1), ("never", 0, 4)
    ]  # fmt: skip
    assert grade.checks[0].message == "✓ fine" and grade.checks[1].message == "AssertionError: no probe"
    assert grade.checks[2].message.startswith("timed out (KeyboardInterrupt): raise --timeout")
    assert grade.checks[3].message == "did not run: the kernel died before"
    assert grade.errors == (("setup", "NameError: name 'x' is not defined"),)
    assert (grade.earned, grade.points, grade.passed) == (2, 10, False)


def test_a_cell_that_runs_too_long_is_interrupted_and_the_rest_still_runs() -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            _cell("wait", points=1),
            _cell("after", points=1),
        ]
    )
    nb.cells[0].source = "import time\ntime.sleep(60)"
    lines: list[str] = []
    grade = exercises.execute(nb, cwd=EXERCISES, timeout=2, progress=lines.append)
    assert [(c.grade_id, c.earned) for c in grade.checks] == [("wait", 0), ("after", 1)], grade
    assert grade.checks[0].message.startswith("timed out"), grade.checks[0]
    assert (
        lines[0] == "[1/2] wait ..."
        and lines[1].startswith("[1/2] wait failed: ")
        and lines[-1].startswith("[2/2] after ok")
    ), lines
