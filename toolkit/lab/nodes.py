"""Nodes in a lab: one handle, whatever the backend (design.md §1, §2).

:meth:`toolkit.lab.backend.Lab.start_node` starts a node on a lab host and returns a
:class:`NodeHandle`. What a caller (``natkit lab run``, ``natkit demo``, a notebook) can ask of it is
the same on every backend, and it reads only the node's public outputs:

* :meth:`NodeHandle.status`: the node's ``NodeStatus.to_json()`` (peers, flowchart state, path, endpoint);
* :meth:`NodeHandle.records`: every trace record so far (the JSON lines an out-of-process node writes,
  parsed back into :class:`~toolkit.sansio.trace.TraceRecord`; the records themselves in ``sim``);
* :meth:`NodeHandle.ping`: ``natkit ping`` through the node, the lines ``tailscale ping`` would print;
* :meth:`NodeHandle.keys`: the node's keys (:class:`~toolkit.node.nodekeys.NodeKeys`: node key, disco key
  pair, WireGuard sessions) for a lab's packet inspector; out-of-process nodes write them with
  ``natkit node --keys-out`` (``keys.jsonl`` beside the trace), ``sim`` reads them from the core;
* :meth:`NodeHandle.stop`.

The kernel backends run ``natkit node`` as a lab service (``netns``: a process in the host's namespace;
``docker``: ``docker exec`` in the host's container) with its files in a per-node directory:
:func:`node_args` builds the command line both use. ``sim`` runs the same sans-IO node core in process
(:class:`toolkit.lab.sim.simnode.SimNode`). :func:`started_nodes` lists a lab's started nodes, whatever
the backend (``lab.nodes``, filled by every backend's ``start_node``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from toolkit.errors import NatkitError, UsageError
from toolkit.lab.labservices import LAB_AUTHKEY, control_url
from toolkit.node.nodekeys import NodeKeys, NodeSession, parse_keys
from toolkit.sansio.trace import TraceRecord
from toolkit.sansio.tracejson import parse_line

if TYPE_CHECKING:
    from toolkit.lab.backend import Lab, ServiceHandle
    from toolkit.lab.topology import Topology


def node_args(topo: Topology, host: str, files: PurePath, *, timing_scale: float = 1.0, tun: bool = True) -> list[str]:
    """``--name HOST --control URL ...`` (after ``natkit node``) with the node's files under ``files``."""
    url = control_url(topo)
    if url is None:
        raise UsageError(f"lab {topo.name!r} has no control-server: add one to a host's services to start nodes")
    argv = ["--name", host, "--control", url, "--authkey", LAB_AUTHKEY]
    argv += ["--state-dir", str(files), "--trace", str(files / "trace.jsonl"), "--keys-out", str(files / "keys.jsonl")]
    argv += ["--api", str(files / "api.sock")]
    if timing_scale != 1.0:
        argv += ["--timing-scale", repr(timing_scale)]
    if not tun:
        argv.append("--no-tun")
    return argv


def started_nodes(lab: Lab) -> dict[str, NodeHandle]:
    """The nodes started on ``lab`` so far, by host (stopped ones too: their keys open earlier captures)."""
    return dict(lab.nodes)


def parse_records(text: str) -> list[TraceRecord]:
    """The records of a trace file's text; a torn last line (the node is still writing) is skipped."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(parse_line(line))
            except (ValueError, KeyError, TypeError):
                continue
    return out


class Traffic(abc.ABC):
    """Packets a node keeps sending through its tunnel until :meth:`stop`, which returns what happened."""

    @abc.abstractmethod
    async def stop(self) -> dict[str, Any]:
        """Stop; ``{"sent": N, "answered": M, ...}``."""


class PingTraffic(Traffic):
    """``ping -c 1`` through the tunnel, again and again (each ends by itself: nothing outlives a stop)."""

    def __init__(self, lab: Lab, host: str, dst_ip: str, interval: float = 0.2) -> None:
        self.lab, self.host, self.dst_ip, self.interval = lab, host, dst_ip, interval
        self.sent = self.answered = 0
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            result = await self.lab.run(self.host, ["ping", "-n", "-c", "1", "-W", "1", self.dst_ip], timeout=5)
            self.sent += 1
            self.answered += result.ok
            await self.lab.sleep(self.interval)

    async def stop(self) -> dict[str, Any]:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return {"kind": "icmp echo", "to": self.dst_ip, "sent": self.sent, "answered": self.answered}


# `natkit ping` exits 1 with these (like `tailscale ping`); a handle's ping() returns the lines instead
PING_VERDICTS = ("no reply", "direct connection not established")


class NodeHandle(abc.ABC):
    """A node started by :meth:`Lab.start_node` (see the module docstring)."""

    def __init__(self, host: str) -> None:
        self.host = host

    @abc.abstractmethod
    async def status(self) -> dict[str, Any]:
        """The node's status as ``NodeStatus.to_json()``."""

    @abc.abstractmethod
    async def records(self) -> list[TraceRecord]:
        """Every trace record the node has written so far."""

    @abc.abstractmethod
    async def keys(self) -> NodeKeys:
        """The node's keys now: node key, disco key pair, and every WireGuard session made so far."""

    @abc.abstractmethod
    async def ping(self, peer: str, *, count: int = 10, until_direct: bool = True) -> list[str]:
        """``natkit ping PEER``: one line per pong or timeout."""

    @abc.abstractmethod
    async def start_traffic(self, dst_ip: str) -> Traffic:
        """Start sending packets through the tunnel to ``dst_ip`` (a peer's tunnel address)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the node (idempotent)."""

    def peer_status(self, status: dict[str, Any], peer: str | None = None) -> dict[str, Any] | None:
        """One peer's entry of ``status`` (by name; default the first)."""
        peers = status.get("peers", [])
        if peer is None:
            return peers[0] if peers else None
        return next((p for p in peers if p.get("name") == peer), None)


class ServiceNode(NodeHandle):
    """``natkit node`` as a lab service, driven through ``natkit status``/``ping`` and its trace file.

    Commands run on the host through :meth:`Lab.run`, so the same class serves ``netns`` (a process in
    the host's namespace) and ``docker`` (``docker exec``); ``natkit`` is the lab's own interpreter.
    """

    def __init__(self, lab: Lab, host: str, service: ServiceHandle, files: PurePath, natkit: Sequence[str]) -> None:
        super().__init__(host)
        self.lab, self.service, self.files, self.natkit = lab, service, files, list(natkit)
        self.api = files / "api.sock"
        self.trace = files / "trace.jsonl"
        self.keys_file = files / "keys.jsonl"

    async def _natkit(self, *args: str, timeout: float = 30.0) -> str:
        result = await self.lab.run(self.host, [*self.natkit, *args, "--api", str(self.api)], timeout=timeout)
        if not result.ok:
            raise NatkitError(f"natkit {args[0]} on {self.host}: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    async def status(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(await self._natkit("status", "--json"))
        return out

    async def records(self) -> list[TraceRecord]:
        result = await self.lab.run(self.host, ["cat", str(self.trace)])
        return parse_records(result.stdout) if result.ok else []

    async def keys(self) -> NodeKeys:
        result = await self.lab.run(self.host, ["cat", str(self.keys_file)])
        keys = parse_keys(result.stdout) if result.ok else None
        if keys is None:
            why = result.stderr.strip() or "no node line yet"
            raise NatkitError(f"the keys of the node on {self.host} ({self.keys_file}): {why}")
        return keys

    async def ping(self, peer: str, *, count: int = 10, until_direct: bool = True) -> list[str]:
        args = ["ping", peer, "--count", str(count)]
        if not until_direct:
            args.append("--no-until-direct")
        argv = [*self.natkit, *args, "--api", str(self.api)]
        result = await self.lab.run(self.host, argv, timeout=count * 6.0 + 10.0)
        verdict = result.exit == 1 and any(v in result.stderr for v in PING_VERDICTS)
        if not result.ok and not verdict:  # the API unreachable, bad arguments: an error, not a ping outcome
            raise NatkitError(f"natkit ping on {self.host}: {result.stderr.strip() or result.stdout.strip()}")
        return [line for line in result.stdout.splitlines() if line.strip()]  # as sim: the lines, whatever the path

    async def start_traffic(self, dst_ip: str) -> Traffic:
        return PingTraffic(self.lab, self.host, dst_ip)

    async def stop(self) -> None:
        await self.service.stop()


__all__ = [
    "NodeHandle",
    "NodeKeys",
    "NodeSession",
    "PingTraffic",
    "ServiceNode",
    "Traffic",
    "node_args",
    "parse_records",
    "started_nodes",
]
