"""Graphviz rendering off the event loop, throttled: :class:`ThrottledRenderer` and :func:`render_svg`.

design.md §5: one ``dot -Tsvg`` of the seed flowchart takes ~20-40 ms, and a notebook's kernel runs
its asyncio loop (and the sim lab with it) on the main thread; rendering there would stall the lab
on every transition. So a widget never renders on the caller's thread. It calls
:meth:`ThrottledRenderer.request` ("my picture is out of date"), which only sets a flag; one worker
thread per renderer then

1. takes the latest picture: it calls ``produce()`` for the dot text *when it starts a render*, so
   any number of requests made meanwhile cost one render (they coalesce);
2. runs ``dot -Tsvg`` (a subprocess: the GIL is released while it works) and hands the SVG to
   ``deliver(svg)``, on the worker thread (ipywidgets sends trait changes from any thread: the
   kernel's iopub socket is thread-safe), so the widget updates even while a cell is busy;
3. waits until ``min_interval`` has passed since that render started before the next one: at most
   one render in flight and at most ``1 / min_interval`` renders a second (10/s by default).

:meth:`ThrottledRenderer.flush` waits until the picture is current (tests, the end of a notebook
cell); :meth:`ThrottledRenderer.render_now` renders synchronously on the calling thread, for
non-live use. A failed render (``dot`` missing, bad dot text) is delivered as a small SVG that says
what went wrong and is kept in :attr:`ThrottledRenderer.last_error`; the worker goes on.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

DOT_TIMEOUT = 30.0  # seconds one ``dot`` run may take before it is called failed
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)  # the <?xml ...?>, DOCTYPE and comments before <svg
_SIZE = re.compile(r'<svg width="[^"]*" height="[^"]*"')


class RenderError(RuntimeError):
    """``dot`` is missing or refused the text."""


def render_svg(dot: str, *, engine: str = "dot") -> str:
    """``dot -Tsvg`` of ``dot`` on the calling thread: the ``<svg>`` element alone (no XML prolog, so it
    embeds in HTML), scaled to its container's width (the viewBox keeps the aspect ratio)."""
    exe = shutil.which(engine)
    if exe is None:
        raise RenderError(f"graphviz's `{engine}` is not installed (Debian: apt-get install graphviz)")
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=DOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RenderError(f"`{engine} -Tsvg` took more than {DOT_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"`{engine} -Tsvg` failed: {why[0] if why else f'exit {done.returncode}'}")
    svg = _PROLOG.sub("", done.stdout.decode())
    return _SIZE.sub('<svg width="100%"', svg, count=1)


def error_svg(message: str) -> str:
    """A small SVG that shows ``message`` where the picture would be."""
    text = html.escape(message)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="40"><text x="4" y="24" '
            f'fill="#d32f2f" font-family="Helvetica" font-size="13">{text}</text></svg>')  # fmt: skip


class ThrottledRenderer:
    """One worker thread that turns ``produce()`` into SVG for ``deliver`` (see the module docstring)."""

    def __init__(
        self,
        produce: Callable[[], str],
        deliver: Callable[[str], None],
        *,
        min_interval: float = 0.1,
        name: str = "natkit render",
        to_svg: Callable[[str], str] | None = None,
    ) -> None:
        """``produce()`` returns graphviz dot text, turned into SVG by ``to_svg`` (default :func:`render_svg`,
        which runs ``dot``); a producer that writes SVG itself passes ``to_svg=str``."""
        self.produce, self.deliver = produce, deliver
        self.to_svg = to_svg if to_svg is not None else render_svg
        self.min_interval = min_interval
        self.name = name
        self.requests = 0  # request() calls
        self.renders = 0  # renders done (worker and render_now)
        self.render_threads: set[int] = set()  # thread idents that ran a render (tests: not the caller's)
        self.last_render_s: float | None = None  # how long the last render took
        self.last_error: str | None = None
        self.svg: str | None = None  # the last SVG delivered
        self._cond = threading.Condition()
        self._dirty = False
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- the caller's side -----------------------------------------------------------------------

    def request(self) -> None:
        """The picture is out of date: render it soon, off this thread. Cheap; never blocks on a render."""
        with self._cond:
            if self._closed:
                return
            self.requests += 1
            self._dirty = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every request so far is rendered and delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._dirty or self._busy) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def render_now(self) -> str:
        """Render and deliver on the calling thread (tests, non-live use); the SVG."""
        with self._cond:
            self._dirty = False
        return self._render_once()

    @property
    def idle(self) -> bool:
        return not (self._dirty or self._busy)

    def close(self) -> None:
        """Stop the worker (a render in flight finishes first)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=DOT_TIMEOUT)

    # --- the worker ------------------------------------------------------------------------------

    def _render_once(self) -> str:
        started = time.monotonic()
        try:
            svg = self.to_svg(self.produce())
            self.last_error = None
        except Exception as exc:  # keep the worker alive: show the failure in place of the picture
            self.last_error = f"{type(exc).__name__}: {exc}"
            svg = error_svg(f"natkit could not draw this: {self.last_error}")
        self.last_render_s = time.monotonic() - started
        self.renders += 1
        self.render_threads.add(threading.get_ident())
        self.svg = svg
        try:
            self.deliver(svg)
        except Exception as exc:
            self.last_error = f"deliver: {type(exc).__name__}: {exc}"
        return svg

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._dirty = False
                self._busy = True
            started = time.monotonic()
            try:
                self._render_once()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            # throttle: the next render starts min_interval after this one started (requests coalesce)
            pause = self.min_interval - (time.monotonic() - started)
            if pause > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, pause)


class RenderedView:
    """What every picture widget shares: its :class:`ThrottledRenderer` (``renderer``) and, when it follows
    a feed, the unsubscribe function (``_unsubscribe``). Subclasses set both in ``__init__``."""

    renderer: ThrottledRenderer
    _unsubscribe: Callable[[], None] | None = None

    @property
    def svg(self) -> str | None:
        """The SVG shown now (None before the first render finished)."""
        return self.renderer.svg

    def render_now(self) -> str:
        """Render on the calling thread and update the widget; the SVG."""
        return self.renderer.render_now()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the widget shows everything so far; False on timeout."""
        return self.renderer.flush(timeout)

    def close(self) -> None:
        """Stop following the feed and stop the render thread."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.renderer.close()


__all__ = ["RenderedView", "DOT_TIMEOUT", "RenderError", "ThrottledRenderer", "error_svg", "render_svg"]
