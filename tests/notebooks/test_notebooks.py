"""Every teaching notebook in ``notebooks/`` runs, and is stored clean (issue 7, design.md §5).

* Each notebook is stored without outputs and execution counts, with the ``python3`` kernel, so diffs stay
  readable and a fresh checkout shows no stale results.
* Each notebook is executed by nbval (``pytest --nbval-lax``: every cell must run without an error; outputs are
  not compared, the notebooks ``assert`` what they teach) in a child pytest, on the ``sim`` backend: a failing
  cell fails this test with the child's report.
* The upgrade-flow notebook also runs on ``netns`` (root): nbval cannot parametrize, so the test writes a copy
  whose cell tagged ``parameters`` says ``BACKEND = "netns"`` and runs that.
* ``notebooks/README.md`` lists every notebook.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.support import require_root, require_tool

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
UPGRADE_FLOW = NOTEBOOK_DIR / "06-upgrade-flow.ipynb"
CELL_TIMEOUT = 300  # seconds per cell: the sim cells take well under one


def _ids() -> list[str]:
    return [nb.stem for nb in NOTEBOOKS]


def _nbval(notebook: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``pytest --nbval-lax`` on one notebook in a child process (its own kernel)."""
    argv = [sys.executable, "-m", "pytest", "--nbval-lax", f"--nbval-cell-timeout={CELL_TIMEOUT}",
            "-p", "no:cacheprovider", "-q", "-rN", "--no-header", str(notebook)]  # fmt: skip
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _passed(res: subprocess.CompletedProcess[str], notebook: Path) -> None:
    assert res.returncode == 0, f"{notebook.name} failed under nbval:\n{res.stdout[-6000:]}\n{res.stderr[-2000:]}"
    assert " passed" in res.stdout and "failed" not in res.stdout, res.stdout[-2000:]


def test_the_notebooks_are_there() -> None:
    names = [nb.name for nb in NOTEBOOKS]
    for expected in ("01-nat-behaviours.ipynb", "02-stun-by-hand.ipynb", "06-upgrade-flow.ipynb"):
        assert expected in names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids())
def test_stored_without_outputs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for i, cell in enumerate(code):
        assert cell.get("outputs") == [], f"code cell {i} of {notebook.name} has stored outputs"
        assert cell.get("execution_count") is None, f"code cell {i} of {notebook.name} has an execution count"
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "starts with a title"
    assert last.cell_type == "markdown" and "## Questions" in last.source, "ends with questions"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids())
def test_listed_in_the_readme(notebook: Path) -> None:
    assert f"]({notebook.name})" in (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids())
def test_runs_on_sim(notebook: Path) -> None:
    started = time.monotonic()
    res = _nbval(notebook)
    _passed(res, notebook)
    assert time.monotonic() - started < 120, f"{notebook.name} took {time.monotonic() - started:.0f} s"


def _with_parameters(source: Path, target: Path, **values: object) -> Path:
    """A copy of ``source`` whose ``parameters`` cell sets ``values`` (papermill's convention)."""
    nb = nbformat.read(source, as_version=4)
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    lines = cell.source.splitlines()
    for name, value in values.items():
        matching = [i for i, line in enumerate(lines) if line.startswith(f"{name} =")]
        assert matching, f"no {name} in the parameters cell of {source.name}"
        lines[matching[0]] = f"{name} = {value!r}"
    cell.source = "\n".join(lines)
    nbformat.write(nb, target)
    return target


def test_upgrade_flow_has_a_backend_parameter(tmp_path: Path) -> None:
    nb = nbformat.read(UPGRADE_FLOW, as_version=4)
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert 'BACKEND = "sim"' in cell.source
    copy = nbformat.read(_with_parameters(UPGRADE_FLOW, tmp_path / "x.ipynb", BACKEND="netns"), as_version=4)
    assert "BACKEND = 'netns'" in next(c for c in copy.cells if c.cell_type == "code").source


def test_upgrade_flow_runs_on_netns(tmp_path: Path) -> None:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    copy = _with_parameters(UPGRADE_FLOW, tmp_path / UPGRADE_FLOW.name, BACKEND="netns")
    before = _notebook_namespaces()
    res = _nbval(copy, timeout=900)
    _passed(res, copy)
    assert not _notebook_namespaces() - before, "the notebook's lab was not taken down"


def _notebook_namespaces() -> set[str]:
    """The network namespaces of notebook labs (``name_prefix`` ``nb<pid>``: ``nk-nb<pid>-<element>``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("nk-nb")}
