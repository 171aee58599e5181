"""nbgrader itself (the ``test`` extra) on a natkit exercise: a throwaway course, generate, submit, autograde.

The course's ``source/ex01`` holds exercise 01 as an instructor writes it for nbgrader
(:func:`toolkit.lab.exercises.nbgrader_source`: the starter code, then the reference solution between
``### BEGIN SOLUTION`` / ``### END SOLUTION``) and its topology file. With ``c.ClearSolutions.code_stub =
{"python": ""}`` ``nbgrader generate_assignment`` releases exactly the stored exercise: the starter code
(``MY_PUBLIC_ENDPOINT = None``, the hint) stays, the check cell and its points stay. (Given the stored
exercise itself as source, nbgrader would replace each whole task cell by ``raise NotImplementedError()``.)

``nbgrader autograde`` then runs two submissions in its own kernel: the solved notebook earns every point,
the untouched release none, and the check cell's output there carries the check's helpful message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from toolkit.lab import exercises
from toolkit.lab.exercises import nbgrader_meta

pytest.importorskip("nbgrader", reason="nbgrader comes with the test extra: pip install -e '.[test]'")

EXERCISES = Path(__file__).resolve().parents[2] / "labs" / "exercises"
ASSIGNMENT = "ex01"
CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "natkit"
c.ClearSolutions.code_stub = {{"python": ""}}  # keep the starter code of the task cells, add nothing
c.Execute.timeout = 120
"""


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent  # nbgrader runs `alembic` from PATH
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def scores(course: Path) -> dict[str, tuple[float, float]]:
    """student -> (score, max score) of the assignment, read from the gradebook by nbgrader's own API."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s: (gb.find_submission(ASSIGNMENT, s).score, gb.find_submission(ASSIGNMENT, s).max_score)
                for s in ("solver", "untouched")}  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nbgrader_releases_the_exercise_and_autogrades_solved_and_untouched(tmp_path: Path) -> None:
    ex = exercises.find_exercise("01", EXERCISES)
    topo = EXERCISES / "01-public-endpoint.yaml"
    course = tmp_path / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    exercises.write_notebook(exercises.nbgrader_source(ex), course / "source" / ASSIGNMENT / ex.path.name)
    shutil.copy(topo, course / "source" / ASSIGNMENT)

    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    release = course / "release" / ASSIGNMENT
    assert (release / topo.name).read_text() == topo.read_text()
    stored, released = (nbformat.read(p, as_version=4) for p in (ex.path, release / ex.path.name))
    assert len(stored.cells) == len(released.cells)
    for mine, theirs in zip(stored.cells, released.cells, strict=True):
        meta, rel = nbgrader_meta(mine), nbgrader_meta(theirs)
        assert theirs.source.rstrip() == mine.source.rstrip(), (meta["grade_id"], theirs.source)  # nothing stripped
        assert {k: rel[k] for k in meta} == meta and rel["checksum"], rel  # the checks keep their points
        assert theirs.metadata.get("editable", True) is not meta["locked"], theirs.metadata
        assert "BEGIN SOLUTION" not in theirs.source
        if meta["solution"]:
            assert "sock.sendto" not in theirs.source, "the reference solution leaked into the release"

    solved = exercises.solved(ex)
    for student, nb in (("solver", solved), ("untouched", released)):
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / ex.path.name)
        shutil.copy(topo, folder)
    nbgrader(course, "autograde", ASSIGNMENT, "--force")

    assert scores(course) == {"solver": (3.0, 3.0), "untouched": (0.0, 3.0)}
    graded = nbformat.read(course / "autograded" / "untouched" / ASSIGNMENT / ex.path.name, as_version=4)
    [check] = [c for c in graded.cells if nbgrader_meta(c).get("grade")]
    [error] = [o for o in check.outputs if o["output_type"] == "error"]
    assert error["ename"] == "AssertionError" and "your probe never left alice" in error["evalue"], error
    assert exercises.grade(graded).errors == ()  # nbgrader's run: only the check failed
    solved_run = nbformat.read(course / "autograded" / "solver" / ASSIGNMENT / ex.path.name, as_version=4)
    assert exercises.grade(solved_run).passed
