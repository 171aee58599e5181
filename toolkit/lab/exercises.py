"""The graded lab exercises (``labs/exercises/NN-name.ipynb``) as data: list them, solve them, check a notebook.

An exercise is a notebook with nbgrader cell metadata (schema 3, nbgrader's "Create Assignment" format):
*task* cells are ``solution`` cells the student edits, *check* cells are ``grade`` cells worth ``points``
(they call :mod:`toolkit.lab.grading` and raise AssertionError with a helpful message), every other cell
is ``locked``. The first code cell, tagged ``parameters``, sets ``BACKEND = "sim"``. The reference
solution lives apart in ``solutions/NN-name.py``: one ``# %% GRADE_ID`` section per task cell.

* :func:`list_exercises` / :func:`find_exercise` (``"01"`` or ``"01-public-endpoint"``) describe them;
* :func:`solved` merges the solution sections into the task cells; :func:`nbgrader_source` writes them
  between nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` delimiters after the student's starter
  code, the instructor version for an nbgrader course (``c.ClearSolutions.code_stub = {"python": ""}``
  then releases exactly the stored exercise);
* :func:`check_notebook` runs a notebook in a fresh kernel (nbclient, cwd = the exercises directory so
  the topology files resolve) and grades it as nbgrader's autograder does: a check cell earns its points
  when it raises nothing (:func:`grade`).

nbformat/nbclient come with the ``notebooks`` extra; they are imported only when a notebook is read.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import UsageError
from toolkit.lab.registry import labs_dir

if TYPE_CHECKING:
    from nbformat import NotebookNode

SECTION = re.compile(r"^# %% (\S+)\n", re.M)  # one reference-solution section per task cell
NAME = re.compile(r"^\d\d-[a-z0-9-]+$")
BACKENDS = ("sim", "netns", "docker")
DEFAULT_TIMEOUT = 300.0  # seconds one cell may run (exercises 04/05 run two nodes on a real backend)
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"  # nbgrader's solution delimiters


def exercises_dir() -> Path:
    """``labs/exercises`` (beside the scenarios, :func:`toolkit.lab.registry.labs_dir`)."""
    return labs_dir() / "exercises"


def nbgrader_meta(cell: Any) -> dict[str, Any]:
    """The cell's nbgrader metadata (empty for a cell without any)."""
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


@dataclass(frozen=True, slots=True)
class CheckCell:
    """A graded cell: its nbgrader grade_id and the points it is worth."""

    grade_id: str
    points: float


@dataclass(frozen=True, slots=True)
class Exercise:
    """One exercise notebook: name (the file's stem), title (its first heading), task and check cells."""

    name: str
    path: Path
    title: str
    tasks: tuple[str, ...]
    checks: tuple[CheckCell, ...]

    @property
    def points(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def solution_path(self) -> Path:
        return self.path.parent / "solutions" / f"{self.name}.py"


def read_notebook(path: Path) -> NotebookNode:
    """The notebook at ``path`` (nbformat 4), or a UsageError saying what is wrong with the file."""
    try:
        import nbformat
    except ImportError:
        raise UsageError("reading notebooks needs nbformat: pip install 'natkit[notebooks]'") from None
    if not path.is_file():
        raise UsageError(f"{path}: no such notebook")
    try:
        nb: NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:  # nbformat raises JSON, validation and unicode errors alike
        raise UsageError(
            f"{path}: not a Jupyter notebook ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})"
        ) from None
    return nb


def describe(path: Path, nb: NotebookNode | None = None) -> Exercise:
    """The :class:`Exercise` a notebook file is; a UsageError when it has no graded (nbgrader) check cell."""
    nb = read_notebook(path) if nb is None else nb
    tasks = tuple(nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c).get("solution"))
    checks = tuple(
        CheckCell(m["grade_id"], float(m.get("points", 0)))
        for m in (nbgrader_meta(c) for c in nb.cells if c.cell_type == "code")
        if m.get("grade")
    )
    if not checks:
        raise UsageError(f"{path}: not an exercise (no nbgrader check cell); see labs/exercises/README.md")
    heading = next((c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("# ")), "")
    title = heading.splitlines()[0][2:].strip() if heading else path.stem
    return Exercise(path.stem, path, title, tasks, checks)


def list_exercises(directory: Path | None = None) -> list[Exercise]:
    """Every ``NN-name.ipynb`` exercise of ``directory`` (default :func:`exercises_dir`), by number."""
    root = directory or exercises_dir()
    return [describe(p) for p in sorted(root.glob("[0-9][0-9]-*.ipynb"))]


def find_exercise(name: str, directory: Path | None = None) -> Exercise:
    """The exercise called ``name``: its number (``"01"``, ``"1"``) or its full name (``"01-public-endpoint"``)."""
    root = directory or exercises_dir()
    wanted = name.removesuffix(".ipynb")
    if wanted.isdigit():
        wanted = f"{int(wanted):02d}"
    found = [p for p in sorted(root.glob("[0-9][0-9]-*.ipynb")) if p.stem == wanted or p.stem[:2] == wanted]
    if len(found) != 1:
        names = ", ".join(p.stem for p in sorted(root.glob("[0-9][0-9]-*.ipynb"))) or "(none)"
        raise UsageError(f"no exercise {name!r} (exercises: {names}; see 'natkit exercise list')")
    return describe(found[0])


def solution_sections(exercise: Exercise) -> dict[str, str]:
    """grade_id -> source of each ``# %% GRADE_ID`` section of the exercise's reference solution."""
    path = exercise.solution_path
    if not path.is_file():
        raise UsageError(f"{exercise.name} has no reference solution ({path} is missing)")
    parts = SECTION.split(path.read_text(encoding="utf-8"))
    return {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}


def _merge(exercise: Exercise, merge: Callable[[str, str], str]) -> NotebookNode:
    nb = read_notebook(exercise.path)
    sections = solution_sections(exercise)
    missing = [t for t in exercise.tasks if t not in sections]
    if missing:
        raise UsageError(f"{exercise.solution_path} has no section for task cell(s) {', '.join(missing)}")
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            cell.source = merge(cell.source, sections[meta["grade_id"]])
    return nb


def solved(exercise: Exercise) -> NotebookNode:
    """The exercise with each task cell replaced by its reference solution section (a full-points submission)."""
    return _merge(exercise, lambda _task, solution: solution)


def nbgrader_source(exercise: Exercise) -> NotebookNode:
    """The instructor version for nbgrader's ``source/`` folder: each task cell keeps the student's starter code,
    followed by the solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``."""
    return _merge(exercise, lambda task, solution: f"{task.rstrip()}\n{BEGIN}\n{solution}\n{END}")


def set_backend(nb: NotebookNode, backend: str) -> NotebookNode:
    """``nb`` with the ``BACKEND = ...`` line of its ``parameters`` cell set to ``backend`` (in place)."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    line = re.compile(r"^BACKEND\s*=.*$", re.M)
    if not cells or not line.search(cells[0].source):
        raise UsageError("the notebook has no parameters cell setting BACKEND: it cannot run on another backend")
    cells[0].source = line.sub(f'BACKEND = "{backend}"', cells[0].source, count=1)
    return nb


def write_notebook(nb: NotebookNode, path: Path, *, force: bool = False) -> Path:
    """Write ``nb`` to ``path`` (stored without outputs), never over an existing file unless ``force``."""
    import nbformat

    if path.exists() and not force:
        raise UsageError(f"{path} exists: choose another file with -o, or overwrite it with --force")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    return path


def restore_locked(nb: NotebookNode, master: NotebookNode) -> list[str]:
    """Put back the master's source in every locked code cell the notebook changed, as nbgrader's autograder
    does (the ``parameters`` cell excepted: its values are the student's to choose). Returns the grade_ids."""
    sources = {
        m["grade_id"]: c.source
        for c in master.cells
        if (m := nbgrader_meta(c)).get("locked") and "parameters" not in c.metadata.get("tags", [])
    }
    restored: list[str] = []
    for cell in nb.cells:
        gid = str(nbgrader_meta(cell).get("grade_id"))
        if gid in sources and cell.cell_type == "code" and cell.source != sources[gid]:
            cell.source = sources[gid]
            restored.append(gid)
    return restored


# --- running and grading a notebook ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check cell's verdict: the points it earned of the points it is worth, and what it said."""

    grade_id: str
    points: float
    earned: float
    message: str

    @property
    def passed(self) -> bool:
        return self.earned >= self.points


@dataclass(frozen=True, slots=True)
class Grade:
    """The verdicts of a run notebook: every check cell, and the errors of the other cells (grade_id, error)."""

    checks: tuple[CheckResult, ...]
    errors: tuple[tuple[str, str], ...]

    @property
    def earned(self) -> float:
        return sum(c.earned for c in self.checks)

    @property
    def points(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def cell_error(cell: Any) -> str | None:
    """``"Name: value"`` of the first error the cell's outputs hold, or None."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".rstrip(": ")
    return None


def cell_text(cell: Any) -> str:
    """What the cell printed (its stream outputs)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def grade(nb: NotebookNode, *, timed_out: frozenset[str] = frozenset(), note: str = "") -> Grade:
    """Grade a run notebook as nbgrader's autograder does: a check cell earns its points when it ran and raised
    nothing. ``timed_out``: the grade_ids of cells interrupted after the timeout; ``note``: why cells that never
    ran did not (a dead kernel)."""
    checks, errors = [], []
    for index, cell in enumerate(nb.cells):
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code":
            continue
        gid = meta.get("grade_id") or f"cell {index + 1}"
        error = cell_error(cell)
        if gid in timed_out:
            error = f"timed out ({error or 'interrupted'}): raise --timeout or look for a wait that never ends"
        if meta.get("grade"):
            points = float(meta.get("points", 0))
            if error is None and cell.get("execution_count") is None and cell.source.strip():
                error = f"did not run{': ' + note if note else ''}"
            if error is None:
                text = cell_text(cell).strip()
                checks.append(CheckResult(gid, points, points, text.splitlines()[-1] if text else "✓ passed"))
            else:
                checks.append(CheckResult(gid, points, 0.0, error))
        elif error is not None:
            errors.append((gid, error))
    return Grade(tuple(checks), tuple(errors))


def execute(
    nb: NotebookNode,
    *,
    cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> Grade:
    """Run ``nb`` in a fresh ``python3`` kernel (in place; cwd default :func:`exercises_dir`), every cell even
    after errors, each for at most ``timeout`` seconds (then the kernel is interrupted), and :func:`grade` it.
    ``progress`` gets one line when each code cell starts and one when it ends."""
    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import DeadKernelError
        from traitlets.config import Config
    except ImportError:
        raise UsageError("running notebooks needs nbclient: pip install 'natkit[notebooks]'") from None

    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    started: dict[int, float] = {}
    timed_out: set[str] = set()

    def label(index: int) -> str:
        gid = nbgrader_meta(nb.cells[index]).get("grade_id") or f"cell {index + 1}"
        return f"[{code.index(index) + 1}/{len(code)}] {gid}" if index in code else gid

    def on_start(cell: Any, cell_index: int) -> None:
        if cell_index in code:
            started[cell_index] = time.monotonic()
            if progress:
                progress(f"{label(cell_index)} ...")

    def on_done(cell: Any, cell_index: int, execute_reply: Any) -> None:
        took = time.monotonic() - started.get(cell_index, time.monotonic())
        if took >= timeout:
            timed_out.add(nbgrader_meta(cell).get("grade_id") or f"cell {cell_index + 1}")
        if progress:
            error = cell_error(cell)
            progress(f"{label(cell_index)} {'failed: ' + error if error else 'ok'} ({took:.1f} s)")

    note = ""
    with tempfile.TemporaryDirectory(prefix="natkit-kernel-") as sockets:
        # IPC sockets in a private directory: no TCP ports, and no "running over TCP without encryption" warning
        client = NotebookClient(
            nb,
            kernel_name="python3",
            config=Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/kernel"}}),
            timeout=int(timeout),
            allow_errors=True,
            interrupt_on_timeout=True,
            resources={"metadata": {"path": str(cwd or exercises_dir())}},
            on_cell_start=on_start,
            on_cell_executed=on_done,
        )
        try:
            client.execute()
        except DeadKernelError:
            note = "the kernel died before"
    return grade(nb, timed_out=frozenset(timed_out), note=note)


def check_notebook(
    path: Path,
    *,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> tuple[Exercise, Grade]:
    """Run a student's notebook (locked cells restored from the stored exercise with the same checks, when there
    is one; ``backend`` replacing its ``BACKEND``) in a fresh kernel in :func:`exercises_dir`, and grade it.
    Returns the stored exercise (else the notebook's own description) and the grade."""
    nb = read_notebook(path)
    exercise = describe(path, nb)
    if backend is not None:
        set_backend(nb, backend)
    master = _master_of(exercise)
    if progress:
        progress(f"running {path} on {backend or 'its BACKEND'} in {exercises_dir()}")
    if master is not None:
        restored = restore_locked(nb, read_notebook(master.path))
        if restored and progress:
            progress(f"restored the locked cell(s) {', '.join(restored)} from {master.path.name}")
    return master or exercise, execute(nb, timeout=timeout, progress=progress)


def _master_of(exercise: Exercise) -> Exercise | None:
    """The stored exercise with the same check cells (the notebook is a copy of it), or None."""
    ids = sorted(c.grade_id for c in exercise.checks)
    try:
        stored = list_exercises()
    except UsageError:
        return None
    return next((e for e in stored if sorted(c.grade_id for c in e.checks) == ids), None)


__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT",
    "CheckCell",
    "CheckResult",
    "Exercise",
    "Grade",
    "cell_error",
    "cell_text",
    "check_notebook",
    "describe",
    "execute",
    "exercises_dir",
    "find_exercise",
    "grade",
    "list_exercises",
    "nbgrader_meta",
    "nbgrader_source",
    "read_notebook",
    "restore_locked",
    "set_backend",
    "solution_sections",
    "solved",
    "write_notebook",
]
