"""Where a ``natkit node`` writes its trace records: a JSON Lines file or a unix stream socket.

design.md §2: out-of-process nodes stream the same records in-process cores emit, as JSON lines
(:mod:`toolkit.sansio.tracejson`), so a notebook cannot tell the backends apart. ``--trace TARGET``:

* ``--trace FILE``: every record appended to ``FILE``, one line each. Lines are buffered and flushed
  after every batch of input the node handled (:meth:`TraceSink.flush`), so a reader sees a record
  within one event-loop turn; a line is never split across two flushes.
* ``--trace unix:PATH``: the node listens on the unix stream socket ``PATH``; every client that
  connects first gets the records still in the backlog (the last ``backlog`` records, 20000 by
  default: the whole start-up of a lab node), then every new record as it is made. A client that
  does not read (its kernel and asyncio buffers above ``max_buffer`` bytes) loses records, counted
  in ``dropped``, instead of slowing the node down. A stale socket file (no one listening) is
  replaced; a live one is a :class:`~toolkit.errors.UsageError` (another node writes there).

Readers: :func:`read_trace_file` parses a file; :func:`follow_unix` yields the records of a socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Protocol

from toolkit.errors import DecodeError, UsageError
from toolkit.sansio.trace import TraceRecord
from toolkit.sansio.tracejson import dumps_line, parse_line

DEFAULT_BACKLOG = 20000
DEFAULT_MAX_BUFFER = 4 << 20  # bytes a slow socket client may have queued before it loses records


class TraceSink(Protocol):
    """A tracer (callable with a record) the driver also starts, flushes and closes."""

    dropped: int

    def __call__(self, record: TraceRecord) -> None: ...

    async def start(self) -> str: ...

    def flush(self) -> None: ...

    async def close(self) -> None: ...


class FileTraceSink:
    """Appends JSON lines to a file (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self.dropped = 0
        self._file: IO[str] | None = None
        self._pending = False

    async def start(self) -> str:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="ascii", buffering=1 << 16)
        except OSError as exc:
            raise UsageError(f"--trace {self.path}: cannot write there: {exc.strerror or exc}") from None
        return f"trace {self.path}"

    def __call__(self, record: TraceRecord) -> None:
        if self._file is None:
            self.dropped += 1
            return
        self._file.write(dumps_line(record))
        self.written += 1
        self._pending = True

    def flush(self) -> None:
        if self._pending and self._file is not None:
            self._pending = False
            try:
                self._file.flush()
            except OSError:  # a full disk: the records are lost, the node goes on
                self.dropped += 1

    async def close(self) -> None:
        self.flush()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class UnixTraceSink:
    """Serves JSON lines to every client of a unix stream socket, with a backlog (module docstring)."""

    def __init__(self, path: Path, *, backlog: int = DEFAULT_BACKLOG, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.path = path
        self.max_buffer = max_buffer
        self.written = 0
        self.dropped = 0
        self._backlog: collections.deque[bytes] = collections.deque(maxlen=backlog)
        self._clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        prepare_socket_path(self.path, "--trace unix:")
        self._server = await asyncio.start_unix_server(self._on_client, path=str(self.path))
        return f"trace unix:{self.path}"

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(self._backlog))
        self._clients.add(writer)
        try:
            while await reader.read(4096):  # clients send nothing; EOF or an error ends them
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def __call__(self, record: TraceRecord) -> None:
        line = dumps_line(record).encode("ascii")
        self._backlog.append(line)
        self.written += 1
        for writer in list(self._clients):
            if writer.is_closing():
                self._clients.discard(writer)
            elif writer.transport.get_write_buffer_size() > self.max_buffer:
                self.dropped += 1
            else:
                writer.write(line)

    def flush(self) -> None:
        """Nothing to do: the transport writes as soon as the loop runs."""

    async def close(self) -> None:
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()


def prepare_socket_path(path: Path, option: str) -> None:
    """Make room for a unix socket at ``path``: create its directory, remove a stale socket file.

    :class:`UsageError` when something answers there or ``path`` is another kind of file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{option}{path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{option}{path} exists and is not a socket: remove it or pick another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        os.unlink(path)  # stale: its process is gone
        return
    finally:
        probe.close()
    raise UsageError(f"{option}{path}: another process listens there: stop it or pick another path")


def open_trace_sink(target: str) -> TraceSink:
    """The sink ``--trace TARGET`` names: ``unix:PATH`` or a file path."""
    if not target:
        raise UsageError("--trace needs a file path or unix:PATH")
    if target.startswith("unix:"):
        path = target.removeprefix("unix:")
        if not path:
            raise UsageError("--trace unix: needs a socket path: unix:/run/natkit/trace-NAME.sock")
        return UnixTraceSink(Path(path))
    return FileTraceSink(Path(target))


def read_trace_file(path: Path) -> tuple[list[TraceRecord], int]:
    """The records of a JSON Lines trace file and how many lines did not parse (a torn last line, say)."""
    records: list[TraceRecord] = []
    bad = 0
    for line in path.read_text(encoding="ascii", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(parse_line(line))
        except DecodeError:
            bad += 1
    return records, bad


async def follow_unix(path: Path) -> AsyncIterator[TraceRecord]:
    """Every record a ``--trace unix:PATH`` node serves (backlog first), until it closes the stream.

    Lines that do not parse are skipped.
    """
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
    try:
        while line := await reader.readline():
            with contextlib.suppress(DecodeError):
                yield parse_line(line)
    finally:
        writer.close()


__all__ = [
    "FileTraceSink",
    "TraceSink",
    "UnixTraceSink",
    "follow_unix",
    "open_trace_sink",
    "prepare_socket_path",
    "read_trace_file",
]
