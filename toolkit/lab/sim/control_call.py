"""A request of the sim's control client (:mod:`toolkit.lab.sim.control_client`) and its outcome.

The simulator has no event loop, so a request cannot be awaited: :class:`ControlCall` is what the caller
holds instead (``done``, then ``result`` or ``error``), with callbacks run in the simulator event that
completed it. ``world.sched.run_while(lambda: not call.done, timeout)`` waits for one in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from toolkit.services.controlclient import ControlError

T = TypeVar("T")


class ControlCall(Generic[T]):
    """One request's outcome: ``done`` once answered; then ``result`` or ``error`` is set."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.done = False
        self.result: T | None = None
        self.error: ControlError | None = None
        self._callbacks: list[Callable[[ControlCall[T]], None]] = []

    def add_done_callback(self, callback: Callable[[ControlCall[T]], None]) -> None:
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def value(self) -> T:
        """The result; raises the error, or RuntimeError while not done."""
        if self.error is not None:
            raise self.error
        if not self.done or self.result is None:
            raise RuntimeError(f"{self.what}: no answer yet (run the simulation)")
        return self.result

    def finish(self, result: T | None, error: ControlError | None) -> None:
        if self.done:
            return
        self.done, self.result, self.error = True, result, error
        for callback in self._callbacks:
            callback(self)
        self._callbacks.clear()

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("error" if self.error else "done")
        return f"<ControlCall {self.what} {state}>"


@dataclass(slots=True)
class Pending:
    """A queued request: what to send, how to read the answer (``parse``) and the call it completes."""

    method: str
    target: str
    body: dict[str, Any] | None
    authed: bool  # needs the bearer token (and is sent once more after a re-registration on a 401)
    parse: Callable[[dict[str, Any]], Any]
    call: ControlCall[Any]
    auth_retried: bool = False
    attempts: int = 0


__all__ = ["ControlCall", "Pending"]
