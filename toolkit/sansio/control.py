"""natkit's coordination server, without I/O: registration, updates, netmaps, streams and long polls.

Tailscale's control plane is proprietary (headscale is the open analogue); natkit's plays the same
role: it hands out addresses, tells every node every other node's keys, endpoints and home DERP
region, and pushes a new netmap whenever any of that changes. The driver
(:mod:`toolkit.services.controlserver`) speaks HTTP/1.1 and feeds this core parsed
:class:`~toolkit.sansio.control_api.Request` values; the core keeps state in a
:class:`~toolkit.sansio.control_api.ControlStore` (SQLite on disk, or in memory for the simulator) and
its open streams and long polls in a :class:`~toolkit.sansio.control_push.NetmapPush`.

API (JSON bodies; field names CamelCase as in Tailscale's ``tailcfg``; every error is
``{"error": "what is wrong and how to fix it"}``)::

    POST /machine/register  {"AuthKey": "...", "NodeKey": "nodekey:<64 hex>", "DiscoKey": "discokey:<64 hex>",
                             "Endpoints": ["1.2.3.4:41641"], "HomeDERP": 1, "Hostname": "alice"}
        -> 200 {"Node": NODE, "Token": "..."}      400 a field is wrong, 401 unknown pre-auth key
    POST /machine/update    (Authorization: Bearer TOKEN) {"Endpoints"?, "HomeDERP"?, "DiscoKey"?, "Hostname"?}
        -> 200 {"Node": NODE, "Version": V}        401 missing or unknown token
    GET  /machine/map?stream=1   (bearer) -> text/event-stream: "event: netmap" + "data: NETMAP" at once and
                                 after every change; ": keepalive" every Timing.control_stream_keepalive
    GET  /machine/map?since=V    (bearer) -> long poll: NETMAP once its Version != V (at once if so), or after
                                 Timing.control_long_poll with the current one
    GET  /machine/map            (bearer) -> NETMAP now
    GET  /derpmap  -> the DERP map (tailcfg JSON); 404 when the server has none
    GET  /         -> {"Server", "Version", "NetmapVersion", "Nodes", "Online"}
    GET  /health   -> {"Status": "ok"}
    NODE   = {"ID", "Name", "Hostname", "NodeKey", "DiscoKey", "Addresses": ["100.64.0.1/32",
              "fd7a:115c:a1e0::1/128"], "Endpoints", "HomeDERP", "Online", "LastSeen", "Created"}
    NETMAP = {"Version", "Self": NODE, "Peers": [NODE, ...], "DERPMap": DERPMAP or null}

Other paths answer 404, other methods 405 (with ``Allow``). Decisions:

* Registering needs one of the server's pre-auth keys. The same NodeKey registered again (with any
  valid key) is the same node: same ID and addresses; DiscoKey, Endpoints, HomeDERP and Hostname
  are replaced, and a new token replaces the old one. Only SHA-256 hashes of tokens and pre-auth keys
  are stored. The request does not prove the caller holds the node's private key (Tailscale's
  Noise-encrypted control protocol does); the pre-auth key is what is trusted.
* Addresses go out in registration order, never reused (:mod:`toolkit.sansio.control_api`). ``Name``
  is the hostname as a DNS label, made unique with ``-2``, ``-3``...
* Any change of a node that peers can see (keys, endpoints, home DERP, name, online) bumps the
  netmap version. A node is ``Online`` while it has a stream open; ``LastSeen`` is its last request.
* ``now`` is monotonic seconds from the driver; wall times (``LastSeen``) are ``epoch + now``.
* Nothing raises: bad input becomes a 4xx answer, counted in ``counters`` under its reason and traced
  as ``dropped``; a failing store becomes 500 (``internal-error``).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

from toolkit import __version__
from toolkit.codec.derpmap import DERPMap
from toolkit.errors import BadValueError
from toolkit.sansio.control_api import (
    MAX_ADDRESS_INDEX,
    QUAD_100,
    ROUTES,
    TRANSITIONS,
    ControlStore,
    NodeRecord,
    NodeState,
    PollPending,
    Reply,
    Request,
    Response,
    StreamOpened,
    address_pair,
    error_response,
    sha256_hex,
    unique_name,
)
from toolkit.sansio.control_netmap import FieldError, NetMap, RegisterBody, UpdateBody, json_object
from toolkit.sansio.control_push import NetmapOf, NetmapPush
from toolkit.sansio.trace import TraceKind, Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing


class _Reject(Exception):
    def __init__(self, reason: str, response: Response) -> None:
        super().__init__(response.error)
        self.reason, self.response = reason, response


def _reject(status: int, reason: str, message: str, *headers: tuple[str, str]) -> _Reject:
    return _Reject(reason, error_response(status, message, *headers))


class ControlCore:
    """The server's state machine. Inputs: :meth:`handle`, :meth:`close_stream`, :meth:`cancel_poll`,
    :meth:`handle_timer`; outputs: the replies, :meth:`stream_writes`, :meth:`poll_answers`, :meth:`get_timer`."""

    def __init__(
        self,
        store: ControlStore,
        authkeys: Iterable[str],
        derp_map: DERPMap | None = None,
        *,
        rng: Callable[[int], bytes],
        epoch: float = 0.0,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        name: str = "control",
    ) -> None:
        self.store, self.derp_map, self.timing, self.name = store, derp_map, timing, name
        self._rng, self._epoch, self._tracer = rng, epoch, tracer
        self._authkeys = frozenset(sha256_hex(k) for k in authkeys)
        for key_hash in sorted(self._authkeys):
            store.add_authkey(key_hash, epoch)
        self._version = store.counter("version")
        self._push = NetmapPush(timing)
        self._online: Counter[int] = Counter()
        self.counters: Counter[str] = Counter()

    # --- introspection ----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The netmap version: bumped by every change peers can see."""
        return self._version

    def state(self, node_id: int) -> NodeState:
        if self._online[node_id] > 0:
            return NodeState.ONLINE
        return NodeState.OFFLINE if self.store.node(node_id) is not None else NodeState.UNKNOWN

    def netmap(self, node_id: int, nodes: list[NodeRecord] | None = None) -> NetMap:
        """The netmap node ``node_id`` is told (``nodes``: the store's nodes, if already read)."""
        records = self.store.nodes() if nodes is None else nodes
        me = next(n for n in records if n.id == node_id)
        peers = tuple(n.public(self._online[n.id] > 0) for n in records if n.id != node_id)
        return NetMap(self._version, me.public(self._online[node_id] > 0), peers, self.derp_map)

    # --- inputs -----------------------------------------------------------------------------------
    def handle(self, request: Request, now: float) -> Reply:
        """Answer one request. Never raises."""
        node: NodeRecord | None = None
        try:
            method, handler = ROUTES.get(request.path, ("", ""))
            if not handler:
                raise _reject(404, "not-found", f"no such path {request.path[:80]!r}: see GET / for the API")
            if request.method != method:
                raise _reject(405, "bad-method", f"{request.path} takes {method}", ("Allow", method))
            if handler in ("update", "map"):
                node = self._authenticate(request, now)
            reply: Reply = getattr(self, f"_{handler}")(request, now, node)
            self.counters[handler] += 1
        except (_Reject, BadValueError) as exc:  # BadValueError: FieldError or BodyError, both 400
            rejected = exc if isinstance(exc, _Reject) else _reject(400, exc.reason, str(exc))
            self.counters[rejected.reason] += 1
            self._trace(now, "dropped", request, node, f"{rejected.response.status} {rejected}", rejected.reason)
            return rejected.response
        except Exception as exc:  # a failing store (disk full, locked): answer, count, keep serving
            self.counters["internal-error"] += 1
            reply = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
            self._trace(now, "dropped", request, node, f"500 {exc}", "internal-error")
            return reply
        status = "long poll waits" if isinstance(reply, PollPending) else str(reply.status)
        self._trace(now, "sent", request, node, f"{status} {request.method} {request.path}", None)
        return reply

    def close_stream(self, stream_id: int, now: float) -> None:
        """The driver lost or closed a stream's connection."""
        node_id = self._push.close_stream(stream_id)
        if node_id is None:
            return
        self._online[node_id] -= 1
        if self._online[node_id] <= 0:
            del self._online[node_id]
            self._touch(node_id, now)
            self._transition(node_id, NodeState.ONLINE, "last stream closed", now)
            self._bump()

    def cancel_poll(self, poll_id: int) -> None:
        self._push.cancel_poll(poll_id)

    def handle_timer(self, now: float) -> None:
        self._push.handle_timer(now)

    # --- outputs ----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self._push.get_timer()

    def stream_writes(self) -> list[tuple[int, bytes]]:
        """Bytes to write to each open stream: a netmap event when the version moved, keepalives."""
        return self._push.stream_writes(self._version, self._netmaps())

    def poll_answers(self) -> list[tuple[int, Response]]:
        """Long polls that can be answered now: the version is no longer ``since``, or time ran out."""
        return self._push.poll_answers(self._version, self._netmaps())

    def _netmaps(self) -> NetmapOf:
        """Netmaps of the store as it is now, read from it once (at the first netmap asked for)."""
        nodes: list[NodeRecord] | None = None

        def netmap_of(node_id: int) -> NetMap:
            nonlocal nodes
            nodes = self.store.nodes() if nodes is None else nodes
            return self.netmap(node_id, nodes)

        return netmap_of

    # --- handlers ---------------------------------------------------------------------------------
    def _info(self, request: Request, now: float, node: NodeRecord | None) -> Response:
        body = {
            "Server": "natkit control-server",
            "Version": __version__,
            "NetmapVersion": self._version,
            "Nodes": len(self.store.nodes()),
            "Online": len(self._online),
            "API": sorted(f"{method} {path}" for path, (method, _) in ROUTES.items()),
        }  # fmt: skip
        return Response(200, body)

    def _health(self, request: Request, now: float, node: NodeRecord | None) -> Response:
        return Response(200, {"Status": "ok"})

    def _derpmap(self, request: Request, now: float, node: NodeRecord | None) -> Response:
        if self.derp_map is None:
            raise _reject(404, "no-derp-map", "this server has no DERP map: start it with --derp-map FILE")
        return Response(200, self.derp_map.to_obj())

    def _register(self, request: Request, now: float, node: NodeRecord | None) -> Response:
        body = RegisterBody.from_obj(json_object(request.body))
        self._check_region(body.home_derp)
        key_hash = sha256_hex(body.auth_key)
        if key_hash not in self._authkeys:
            raise _reject(401, "bad-authkey", "unknown pre-auth key: use a key given to the server with --authkey")
        token, wall = self._rng(32).hex(), self._epoch + now
        old = self.store.node_by_key(body.node_key)
        if old is None:
            node_id = self.store.bump("node-id")
            v4, v6 = self._allocate()
            name = unique_name(body.hostname, node_id, self.store.nodes())
            new = NodeRecord(
                node_id, name, body.hostname, body.node_key, body.disco_key, body.endpoints, body.home_derp,
                v4, v6, wall, wall, sha256_hex(token), key_hash,
            )  # fmt: skip
        else:
            same = body.hostname == old.hostname
            name = old.name if same else unique_name(body.hostname, old.id, self.store.nodes())
            new = replace(
                old, name=name, hostname=body.hostname, disco_key=body.disco_key, endpoints=body.endpoints,
                home_derp=body.home_derp, last_seen=wall, token_hash=sha256_hex(token), authkey_hash=key_hash,
            )  # fmt: skip
        self.store.put_node(new)
        self.store.use_authkey(key_hash)
        if old is None:
            self._transition(new.id, NodeState.UNKNOWN, "registered", now)
            self.counters["nodes-added"] += 1
        if old is None or self._visible(old) != self._visible(new):
            self._bump()
        return Response(200, {"Node": new.public(self._online[new.id] > 0).to_obj(), "Token": token})

    def _update(self, request: Request, now: float, node: NodeRecord | None) -> Response:
        assert node is not None
        body = UpdateBody.from_obj(json_object(request.body))
        new = node
        if body.endpoints is not None:
            new = replace(new, endpoints=body.endpoints)
        if body.home_derp is not None:
            new = replace(new, home_derp=self._check_region(body.home_derp))
        if body.disco_key is not None:
            new = replace(new, disco_key=body.disco_key)
        if body.hostname is not None and body.hostname != node.hostname:
            new = replace(new, hostname=body.hostname, name=unique_name(body.hostname, node.id, self.store.nodes()))
        self.store.put_node(new)
        if self._visible(new) != self._visible(node):
            self._bump()
        return Response(200, {"Node": new.public(self._online[new.id] > 0).to_obj(), "Version": self._version})

    def _map(self, request: Request, now: float, node: NodeRecord | None) -> Reply:
        assert node is not None
        query = request.query
        stream = query.get("stream", "0").lower()
        if stream not in ("0", "1", "true", "false", ""):
            raise _reject(400, "bad-query", "query 'stream': give stream=1 for a stream of netmaps")
        since_text = query.get("since")
        if stream in ("1", "true"):
            if since_text is not None:
                raise _reject(400, "bad-query", "query: give either stream=1 or since=VERSION, not both")
            return self._open_stream(node.id, now)
        if since_text is None:
            return Response(200, self.netmap(node.id).to_obj())
        if not re.fullmatch(r"[0-9]{1,18}", since_text):
            raise _reject(400, "bad-query", "query 'since': not a version number (give the last netmap's Version)")
        if int(since_text) != self._version:  # newer already (or a client of another database): at once
            return Response(200, self.netmap(node.id).to_obj())
        return PollPending(self._push.add_poll(node.id, int(since_text), now), node.id)

    # --- helpers ----------------------------------------------------------------------------------
    def _open_stream(self, node_id: int, now: float) -> StreamOpened:
        stream_id = self._push.open_stream(node_id, now)
        self._online[node_id] += 1
        if self._online[node_id] == 1:
            self._transition(node_id, NodeState.OFFLINE, "stream opened", now)
            self._bump()
        return StreamOpened(stream_id, node_id)

    def _authenticate(self, request: Request, now: float) -> NodeRecord:
        token = request.bearer()
        if token is None:
            raise _reject(
                401, "bad-token", "missing 'Authorization: Bearer TOKEN': register first (POST /machine/register)"
            )
        node = self.store.node_by_token(sha256_hex(token))
        if node is None:
            raise _reject(401, "bad-token", "unknown token: register again (POST /machine/register)")
        return self._touch(node.id, now, node)

    def _touch(self, node_id: int, now: float, node: NodeRecord | None = None) -> NodeRecord:
        record = node if node is not None else self.store.node(node_id)
        assert record is not None
        new = replace(record, last_seen=self._epoch + now)
        self.store.put_node(new)
        return new

    def _check_region(self, region: int) -> int:
        if region and self.derp_map is not None and region not in self.derp_map.regions:
            known = ", ".join(str(r) for r in sorted(self.derp_map.regions)) or "none"
            raise FieldError("HomeDERP", f"no region {region} in the DERP map (regions: {known}; 0 for none)")
        return region

    def _allocate(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
        while True:
            index = self.store.bump("address")
            if index > MAX_ADDRESS_INDEX:
                raise _reject(503, "exhausted", "no address left in 100.64.0.0/10")
            v4, v6 = address_pair(index)
            if v4 != QUAD_100:
                return v4, v6

    @staticmethod
    def _visible(node: NodeRecord) -> tuple[object, ...]:
        return (node.name, node.hostname, node.disco_key, node.endpoints, node.home_derp)

    def _bump(self) -> None:
        self._version = self.store.bump("version")

    def _transition(self, node_id: int, before: NodeState, edge: str, now: float) -> None:
        after = TRANSITIONS[(before, edge)]
        if self._tracer is not None:
            record = self.store.node(node_id)
            peer = record.node_key if record is not None else None
            detail = f"node {node_id}: {before.value} -> {after.value}"
            self._tracer(TraceRecord(now, self.name, peer, "transition", detail, edge))

    def _trace(
        self, now: float, kind: TraceKind, request: Request, node: NodeRecord | None, detail: str, reason: str | None
    ) -> None:
        if self._tracer is None:
            return
        peer = node.node_key if node is not None else None
        head = f"{request.method[:16]} {request.path[:80]}"
        self._tracer(TraceRecord(now, self.name, peer, "received", head, None, request.body, request.peer))
        self._tracer(TraceRecord(now, self.name, peer, kind, detail, reason, b"", request.peer))


__all__ = ["ControlCore"]
