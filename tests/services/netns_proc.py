"""A small Python program in a network namespace that talks JSON lines, for tests across the NAT lab.

``netns_program(ns, "tests.services.netns_derppeer", ARGS...)`` runs ``ip netns exec NS python -m
MODULE ARGS`` (``ip netns exec`` execs the program, so the child's pid is Python's). Every line the
program prints on stdout is one JSON object with an ``"event"`` key; a reader thread collects them
and :meth:`NetnsProgram.wait_for` waits for one that matches. :meth:`NetnsProgram.send` writes one
JSON command line to its stdin. On exit the program gets ``{"cmd": "quit"}`` and a few seconds to
finish; then it is killed (its whole process group), also when the test fails.

The programs are the ``tests/services/netns_*.py`` modules with a ``main()``; :func:`emit` and
:func:`commands` are their half of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from tests.support import ROOT

Event = dict[str, Any]


class NetnsProgram:
    """A running JSON-lines program; ``events`` is everything it printed so far."""

    def __init__(self, netns: str, module: str, *args: str) -> None:
        self.name = f"{module.rsplit('.', 1)[-1]} in {netns}"
        argv = ["ip", "netns", "exec", netns, sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True)]
        self._threads.append(threading.Thread(target=self._read_stderr, daemon=True))
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "text": line.rstrip("\n")}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float = 10.0, what: str = "an event", nth: int = 1
    ) -> Event:
        """The ``nth`` event (in print order) that ``predicate`` accepts; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [event for event in self.events if predicate(event)]
                if len(matches) >= nth:
                    return matches[nth - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._threads[0].is_alive()):
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(f"{self.name}: no {what} within {timeout} s; {self.describe()}")

    def count(self, kind: str) -> int:
        with self._cond:
            return sum(1 for e in self.events if e.get("event") == kind)

    def describe(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exited {code}"
        with self._cond:
            events = "\n  ".join(json.dumps(e) for e in self.events)
        return f"{state}; events:\n  {events}\nstderr:\n  " + "\n  ".join(self.stderr[-30:])

    def close(self, timeout: float = 5.0) -> int:
        """Ask the program to quit, wait, kill its process group if it does not; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send(cmd="quit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for t in self._threads:
            t.join(2)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        return self.proc.returncode


@contextlib.contextmanager
def netns_program(netns: str, module: str, *args: str) -> Iterator[NetnsProgram]:
    program = NetnsProgram(netns, module, *args)
    try:
        yield program
    finally:
        program.close()


# --- the program's side ----------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    """Print one JSON event line (values that are not JSON types are written as their str())."""
    obj = {"event": event, **fields}
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


async def commands() -> AsyncIterator[Event]:
    """The JSON commands on stdin, until ``{"cmd": "quit"}`` or end of input."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command: Event = json.loads(line)
        if command.get("cmd") == "quit":
            return
        yield command
