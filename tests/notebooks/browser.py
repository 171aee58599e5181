"""A headless JupyterLab server and a headless Debian Chromium driven by Selenium, for the browser test (issue 7).

* :class:`JupyterLab` runs ``jupyter lab`` from the venv on a free port with a random token, rooted in a
  directory of the caller's, with its own runtime, settings and workspaces directories (nothing read from or
  written to ``~/.jupyter``; no stale layout reopened, no news toast). ``stop()`` shuts down every kernel
  through the REST API, then SIGTERMs the server's process group (SIGKILL after a grace period).
* :func:`chromium` starts Debian's ``/usr/bin/chromium`` through Debian's ``/usr/bin/chromedriver``
  (Selenium's own driver download, Selenium Manager, is never used: the service is given the path) in
  headless mode with a profile in the caller's directory; it quits the browser and kills what is left of
  the driver's process group and of Chromium's crash handlers on exit, also when the test fails.
* :class:`LabPage` knows just enough of JupyterLab 4's DOM to open a notebook, run all cells from the
  *Run* menu, read the cells' execution state and error outputs, read the colours of a graphviz chart in an
  output, and bring a widget wholly into view for a screenshot.
* :func:`processes_mentioning` finds processes by a temp path of the test's own (in their command line), to
  check that nothing outlived the teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import free_tcp_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 1000)

# User settings of JupyterLab's own extensions (files under the settings directory): no news or update toast over
# the notebook; no windowing, so every cell is in the DOM and scrolling to an output is plain.
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class JupyterLab:
    """``jupyter lab`` serving ``root`` on 127.0.0.1 (a free port, a random token), headless."""

    def __init__(self, root: Path, state: Path, timeout: float = 30.0) -> None:
        self.root = root
        self.state = state
        self.port = free_tcp_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = state / "settings"
        for name, values in _SETTINGS.items():
            target = settings / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values), encoding="utf-8")
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTER_DATA_DIR": str(state / "data"),  # kernelspecs from the venv only, not ~/.local/share/jupyter
            "IPYTHONDIR": str(state / "ipython"),
        }
        argv = [
            str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
            f"--ServerApp.token={self.token}", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True", f"--LabApp.workspaces_dir={state / 'workspaces'}",
            f"--LabApp.user_settings_dir={settings}",
        ]  # fmt: skip
        self.log_path = state / "jupyterlab.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"jupyter lab exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                self.api("status")
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"jupyter lab did not answer on {self.base} in {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        """A call to the server's REST API (``/api/PATH``), its JSON answer (None when empty)."""
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict[str, Any]]:
        return list(self.api("kernels"))

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self, grace: float = 10.0) -> None:
        """Shut every kernel down, then the server (its whole process group); idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for kernel in self.kernels():
                    self.api(f"kernels/{kernel['id']}", method="DELETE")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        # Kernels run in sessions of their own; their connection files are in our runtime directory.
        kill_processes_mentioning(str(self.state))
        self._log.close()


@contextlib.contextmanager
def jupyterlab(root: Path) -> Iterator[JupyterLab]:
    """A :class:`JupyterLab` on ``root``, stopped (kernels and server) on exit, also on failure."""
    state = Path(tempfile.mkdtemp(prefix="natkit-jlab-"))
    server = None
    try:
        server = JupyterLab(root, state)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def chromium(profile: Path, binary: str = CHROMIUM, driver_path: str = CHROMEDRIVER) -> Iterator[Any]:
    """A headless Chromium (Debian's, via Debian's chromedriver) as a Selenium ``WebDriver``, its profile (and
    crash database) in the caller's empty directory ``profile``; quit on exit, nothing of it left running."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--disable-gpu",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--no-first-run",
                "--hide-scrollbars", "--force-device-scale-factor=1", "--disable-crash-reporter",
                "--disable-breakpad"):  # fmt: skip
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    # Chromium's crash handler would keep its database in ~/.config/chromium: point XDG there at the profile.
    env = {**os.environ, "XDG_CONFIG_HOME": str(profile), "XDG_CACHE_HOME": str(profile)}
    service = Service(executable_path=driver_path, env=env, popen_kw={"start_new_session": True})
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_window_size(*WINDOW)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        process = getattr(service, "process", None)
        if process is not None:
            # Chromium runs in chromedriver's process group: kill whatever quit() left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(5)
        kill_processes_mentioning(str(profile))  # the crash handlers (own sessions, database in the profile)


def processes_mentioning(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``text``: a temp path of our own, no one else's."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def kill_processes_mentioning(text: str, grace: float = 3.0) -> None:
    """Wait ``grace`` seconds for :func:`processes_mentioning` ``text`` to end by themselves, then SIGKILL them."""
    deadline = time.monotonic() + grace
    while (pids := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- JupyterLab 4's DOM -----------------------------------------------------------------------------------

# The cells of the open notebook: prompt text ("[ ]:", "[*]:", "[3]:") and error outputs (JupyterLab shows an
# `error` output, the traceback, as application/vnd.jupyter.stderr).
_CELLS_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const cells = [...panel.querySelectorAll('.jp-Cell.jp-CodeCell')].map(cell => {
  const prompt = cell.querySelector('.jp-InputArea-prompt');
  return prompt ? prompt.textContent.trim() : '';
});
const errors = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map(e => e.textContent).filter(t => t.includes('Traceback') || t.includes('Error'));
return {cells: cells, errors: errors};
"""

# The graphviz SVG in an output that has a node titled arguments[0]: every node's fill, every edge's stroke, by title
# (<g class="node"><title>DirectActive</title><polygon fill=...>, <g class="edge"><title>A&#45;&gt;B</title><path stroke=...>).
_CHART_JS = """
for (const svg of document.querySelectorAll('.jp-OutputArea-output svg')) {
  const titles = [...svg.querySelectorAll('g.node > title')].map(t => t.textContent.trim());
  if (!titles.includes(arguments[0])) continue;
  const colours = (kind, shapes, attr) => [...svg.querySelectorAll('g.' + kind)].map(g => {
    const shape = g.querySelector(shapes);
    return [g.querySelector('title').textContent.trim(), shape ? shape.getAttribute(attr) : ''];
  });
  return {nodes: colours('node', 'polygon, ellipse, path', 'fill'), edges: colours('edge', 'path', 'stroke')};
}
return null;
"""


# The widget box around the output SVG that has a node titled arguments[0] (the FlowchartView's VBox).
_WIDGET_BOX_JS = """
for (const title of document.querySelectorAll('.jp-OutputArea-output svg g.node > title')) {
  if (title.textContent.trim() === arguments[0]) {
    return title.closest('.widget-vbox') || title.closest('.jp-OutputArea-output');
  }
}
return null;
"""

# The notebook scrolls in its own element (JupyterLab 4's windowed panel, even with windowing off), not the document.
_SCROLL_TO_TOP_JS = """
const box = arguments[0];
const scroller = box.closest('.jp-WindowedPanel-outer') || box.closest('.jp-Notebook');
scroller.scrollTop += box.getBoundingClientRect().top - scroller.getBoundingClientRect().top - 8;
"""


@dataclass(frozen=True, slots=True)
class Cells:
    prompts: list[str]  # one per code cell: "[ ]:", "[*]:", "[7]:"
    errors: list[str]  # texts of error outputs

    @property
    def done(self) -> bool:
        """Every code cell has run (an execution count, none queued or running)."""
        return bool(self.prompts) and all(p[1:-2].strip().isdigit() for p in self.prompts)


@dataclass(frozen=True, slots=True)
class Chart:
    """A graphviz SVG as the browser shows it: node title -> fill, edge title (``A->B``) -> stroke."""

    fills: dict[str, str]
    strokes: dict[str, str]


class LabPage:
    """The JupyterLab page in ``driver``: a notebook opened by URL, run from the menu, its outputs read."""

    def __init__(self, driver: Any, server: JupyterLab) -> None:
        self.driver = driver
        self.server = server

    def open_notebook(self, name: str, timeout: float = 30.0) -> None:
        """Open ``name`` and wait until its cells are on the page and its kernel is idle."""
        self.driver.get(self.server.url(f"lab/tree/{name}"))
        self._wait(lambda: self.cells() is not None and bool(self.cells().prompts), timeout, "the notebook's cells")  # type: ignore[union-attr]
        # The indicator may say idle before the session exists: the server must know the kernel too.
        self._wait(lambda: bool(self.server.kernels()) and self.kernel_idle(), timeout, "the kernel (status idle)")

    def kernel_idle(self) -> bool:
        return bool(
            self.driver.execute_script(
                "const k = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
                "return k ? k.getAttribute('data-status') === 'idle' : false;"
            )
        )

    def run_all_cells(self, timeout: float = 10.0) -> None:
        """Run → Run All Cells, clicked in the menu bar as a student would."""
        from selenium.webdriver.common.by import By

        self._find(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][div[text()='Run']]", timeout).click()
        self._find(By.XPATH, "//li[contains(@class,'lm-Menu-item')][div[text()='Run All Cells']]", timeout).click()

    def cells(self) -> Cells | None:
        state = self.driver.execute_script(_CELLS_JS)
        return None if state is None else Cells(state["cells"], state["errors"])

    def chart(self, title: str) -> Chart | None:
        """The colours of the graphviz chart in an output that has a node titled ``title``, None if none has."""
        found = self.driver.execute_script(_CHART_JS, title)
        return None if found is None else Chart(dict(found["nodes"]), dict(found["edges"]))

    def show_widget_of(self, title: str) -> Any:
        """The widget box whose output SVG has the graphviz node ``title`` (the FlowchartView's VBox), wholly on
        screen: the window grows to the box's height (the chart is taller than 1000 px) and the notebook
        scrolls it to the top. None when no output shows that node."""
        box = self.driver.execute_script(_WIDGET_BOX_JS, title)
        if box is None:
            return None
        height = int(self.driver.execute_script("return arguments[0].getBoundingClientRect().height;", box))
        # A headless window cannot outgrow its virtual screen: grow the viewport through DevTools instead.
        metrics = {"width": WINDOW[0], "height": max(WINDOW[1], height + 240), "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # + menu, toolbar, status bar
        time.sleep(0.3)  # JupyterLab lays the panels out again
        self.driver.execute_script(_SCROLL_TO_TOP_JS, box)
        return box

    def _find(self, by: str, what: str, timeout: float) -> Any:
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(expected_conditions.element_to_be_clickable((by, what)))

    @staticmethod
    def _wait(predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {what}")
            time.sleep(0.2)
