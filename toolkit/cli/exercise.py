"""`natkit exercise list|solve|check`: the graded lab exercises for teachers and students.

``natkit exercise list`` prints each exercise of ``labs/exercises/`` with its title, its points, its task
cells (what the student writes) and its check cells (what is graded, with points).

``natkit exercise solve NN [-o FILE] [--nbgrader] [--force]`` writes the solved notebook: the task cells
replaced by the reference solution's ``# %% GRADE_ID`` sections (``solutions/NN-name.py``); default file
``NN-name-solved.ipynb`` in the current directory. ``--nbgrader`` writes the instructor version for an
nbgrader course instead (starter code + solution between ``### BEGIN SOLUTION`` / ``### END SOLUTION``).
It never overwrites a file without ``--force``. NN is the number (``01``) or the name (``01-public-endpoint``).

``natkit exercise check NOTEBOOK [--backend B] [--timeout S]`` runs a student's notebook in a fresh Jupyter
kernel with the exercises directory as its working directory (so the topology files resolve), the locked
cells as stored (as nbgrader's autograder restores them), and ``BACKEND`` replaced when ``--backend`` is
given. It prints one line per check cell (grade_id, points earned/possible, the check's message), the
errors of other cells, and a total; progress lines go to stderr while the cells run. Exit 0 when every
check passes, 1 otherwise, 2 for bad input (no such file, not an exercise, unknown backend).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from toolkit.cli.lab import BACKEND_CHOICES  # one list for every --backend
from toolkit.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser(
        "exercise",
        help="graded lab exercises: list them, write the solved notebook, check a student's notebook",
        description="The graded lab exercises of labs/exercises (nbgrader notebooks whose checks grade the network).",
    )
    ex.set_defaults(func=lambda args: _usage(ex))
    cmds = ex.add_subparsers(title="subcommands", metavar="SUBCOMMAND", parser_class=type(ex))

    ls = cmds.add_parser("list", help="each exercise: title, points, task and check cells")
    ls.set_defaults(func=run_list)

    solve = cmds.add_parser("solve", help="write the notebook with the reference solution in its task cells")
    solve.add_argument("exercise", metavar="NN", help="the exercise's number (01) or name (01-public-endpoint)")
    solve.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="where to write (default NN-name-solved.ipynb)"
    )
    solve.add_argument(
        "--nbgrader", action="store_true", help="write nbgrader's instructor version (solutions between delimiters)"
    )
    solve.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    solve.set_defaults(func=run_solve)

    check = cmds.add_parser("check", help="run a student's notebook in a fresh kernel and grade its check cells")
    check.add_argument("notebook", type=Path, metavar="NOTEBOOK", help="the student's copy of an exercise (.ipynb)")
    check.add_argument("--backend", choices=BACKEND_CHOICES, help="run on this backend (replaces BACKEND)")
    check.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds one cell may run (300)")
    check.set_defaults(func=run_check)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _points(value: float) -> str:
    return f"{value:g}"


def run_list(args: argparse.Namespace) -> int:
    from toolkit.lab.exercises import exercises_dir, list_exercises

    found = list_exercises()
    if not found:
        raise UsageError(f"no exercises in {exercises_dir()}")
    width = max(len(e.name) for e in found)
    for e in found:
        print(f"{e.name:<{width}}  {_points(e.points):>2} points  {e.title}")
        print(f"{'':<{width}}    tasks:  {', '.join(e.tasks)}")
        checks = ", ".join(f"{c.grade_id} ({_points(c.points)})" for c in e.checks)
        print(f"{'':<{width}}    checks: {checks}")
    print("\n'natkit exercise solve NN' writes a solved copy; 'natkit exercise check FILE' grades a notebook")
    return 0


def run_solve(args: argparse.Namespace) -> int:
    from toolkit.lab.exercises import find_exercise, nbgrader_source, solved, write_notebook

    exercise = find_exercise(args.exercise)
    nb = nbgrader_source(exercise) if args.nbgrader else solved(exercise)
    default = f"{exercise.name}{'-source' if args.nbgrader else '-solved'}.ipynb"
    path = write_notebook(nb, args.output or Path(default), force=args.force)
    what = "nbgrader instructor version" if args.nbgrader else "solved notebook"
    print(f"natkit exercise: wrote the {what} of {exercise.name} to {path} ({len(exercise.tasks)} task cell(s))")
    if args.nbgrader:
        print(
            "  put it in your course's source/ASSIGNMENT/ with the exercise's topology file and set "
            "c.ClearSolutions.code_stub = {'python': ''} so that the release keeps the starter code"
        )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from toolkit.lab.exercises import check_notebook

    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    path: Path = args.notebook
    t0 = time.monotonic()
    exercise, grade = check_notebook(
        path,
        backend=args.backend,
        timeout=args.timeout,
        progress=lambda line: print(f"natkit exercise: {line}", file=sys.stderr),
    )
    width = max(len(c.grade_id) for c in grade.checks)
    for c in grade.checks:
        mark = "✓" if c.passed else "✗"
        message = c.message.removeprefix("✓ ")
        print(f"{mark} {c.grade_id:<{width}}  {_points(c.earned)}/{_points(c.points)}  {message}")
    for gid, error in grade.errors:
        print(f"  (cell {gid} raised {error})")
    passing = sum(c.passed for c in grade.checks)
    print(
        f"total {_points(grade.earned)}/{_points(grade.points)} points: {passing} of {len(grade.checks)} check(s) "
        f"pass ({exercise.name}, {time.monotonic() - t0:.1f} s)"
    )
    return 0 if grade.passed else 1
