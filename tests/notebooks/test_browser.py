"""A real browser runs the upgrade-flow notebook in JupyterLab and sees the flowchart reach DirectActive (issue 7).

The suite starts JupyterLab headless on a copy of ``notebooks/`` and drives Debian's Chromium through Debian's
chromedriver with Selenium (:mod:`tests.notebooks.browser`): it opens ``06-upgrade-flow.ipynb``, clicks
*Run → Run All Cells*, and waits until the FlowchartView's SVG, rendered by the ipywidgets front end, draws the
graphviz node ``DirectActive`` in the highlight colour (:data:`toolkit.sansio.peergraph.CURRENT_COLOURS`). Then
every cell must have run without an error output. The page and the widget are saved as PNG screenshots to
``$NATKIT_ARTIFACTS`` (default ``tests/artifacts/``); with ``NATKIT_UPDATE_SCREENSHOT=1`` the widget's screenshot
is also written to ``docs/flowchart-widget.png`` for the README.

Needs ``chromium`` and ``chromium-driver`` (Debian packages; ``make test`` as root installs them) and
``selenium`` (the ``test`` extra).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nbformat
import pytest

from tests.notebooks.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    Cells,
    Chart,
    LabPage,
    chromium,
    jupyterlab,
    processes_mentioning,
)
from tests.support import IN_CI, require_tool
from toolkit.sansio.peergraph import CURRENT_COLOURS
from toolkit.widgets.flowchart import TAKEN_COLOUR

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "06-upgrade-flow.ipynb"
CURRENT_FILL = CURRENT_COLOURS[0]  # "#ffeb3b"
RUN_TIMEOUT = 60.0  # seconds from Run All to DirectActive highlighted, and to the last cell done
T = TypeVar("T")


def _artifacts() -> Path:
    directory = Path(os.environ.get("NATKIT_ARTIFACTS") or ROOT / "tests" / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _requirements() -> tuple[str, str]:
    """The Chromium and chromedriver programs; skips (fails in CI) when they or selenium are missing."""
    binary = require_tool(Path(CHROMIUM).name, "chromium")
    driver = require_tool(Path(CHROMEDRIVER).name, "chromium-driver")
    if IN_CI:
        import selenium  # noqa: F401  (CI must have the test extra: fail, not skip)
    else:
        pytest.importorskip("selenium", reason="needs selenium: `make test` installs the test extra (.[test])")
    return binary, driver


@contextlib.contextmanager
def _screenshot_on_failure(driver: Any, path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(path))
        raise


def _while_running(page: LabPage, since: float, what: str, probe: Callable[[Cells], T | None]) -> T:
    """Poll ``probe`` until it gives a value; fail at once on an error output, or after RUN_TIMEOUT."""
    while True:
        cells = page.cells()
        assert cells is not None, "the notebook panel went away"
        assert not cells.errors, f"a cell failed in the browser:\n{cells.errors[0][-3000:]}"
        if (value := probe(cells)) is not None:
            return value
        assert time.monotonic() - since < RUN_TIMEOUT, f"{what}: not in {RUN_TIMEOUT:.0f} s; prompts {cells.prompts}"
        time.sleep(0.25)


def _direct_active(page: LabPage) -> Chart | None:
    chart = page.chart("DirectActive")
    return chart if chart is not None and chart.fills["DirectActive"] == CURRENT_FILL else None


@pytest.mark.tool
@pytest.mark.slow
def test_upgrade_flow_in_jupyterlab(tmp_path: Path) -> None:
    binary, driver_path = _requirements()
    started = time.monotonic()
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shots = _artifacts()
    (shots / "upgrade-flow-failed.png").unlink(missing_ok=True)
    with (
        jupyterlab(root) as server,
        chromium(tmp_path / "chromium", binary, driver_path) as driver,
        _screenshot_on_failure(driver, shots / "upgrade-flow-failed.png"),
    ):
        page = LabPage(driver, server)
        page.open_notebook(NOTEBOOK)
        assert len(server.kernels()) == 1, "opening the notebook starts one kernel"
        page.run_all_cells()
        ran = time.monotonic()
        _while_running(page, ran, f"DirectActive drawn in {CURRENT_FILL}", lambda _: _direct_active(page))
        to_direct = time.monotonic() - ran
        cells = _while_running(page, ran, "every cell run", lambda c: c if c.done else None)
        code_cells = [c for c in nbformat.read(root / NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
        assert len(cells.prompts) == len(code_cells) and not cells.errors

        # The last cells took the lab down; the chart still shows where alice's machine ended: DirectActive alone
        # in the highlight colour, reached over the edge drawn in the "just taken" colour.
        chart = _direct_active(page)
        assert chart is not None, "the chart lost its highlight"
        assert [n for n, fill in chart.fills.items() if fill == CURRENT_FILL] == ["DirectActive"], chart.fills
        taken = [e for e, stroke in chart.strokes.items() if stroke == TAKEN_COLOUR]
        assert len(taken) == 1 and taken[0].endswith("->DirectActive"), chart.strokes

        widget = page.show_widget_of("DirectActive")
        assert widget is not None
        time.sleep(0.5)  # let the layout settle after the resize and scroll
        driver.save_screenshot(str(shots / "upgrade-flow-jupyterlab.png"))
        assert widget.screenshot(str(shots / "flowchart-widget.png"))
    # Teardown took everything down: server, kernel, chromedriver, Chromium and its helpers.
    assert not processes_mentioning(str(server.state)), "a JupyterLab server or kernel outlived the test"
    assert not processes_mentioning(str(tmp_path / "chromium")), "a Chromium process outlived the test"
    assert (shots / "flowchart-widget.png").stat().st_size > 10_000
    if os.environ.get("NATKIT_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shots / "flowchart-widget.png", ROOT / "docs" / "flowchart-widget.png")
    elapsed = time.monotonic() - started
    print(f"DirectActive {to_direct:.1f} s after Run All; the whole test {elapsed:.1f} s")
    assert elapsed < 60, f"the browser test took {elapsed:.0f} s"
