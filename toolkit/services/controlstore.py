"""Where the coordination server keeps its state: SQLite on disk, or a dict in memory.

Both classes implement :class:`toolkit.sansio.control_api.ControlStore`, the small protocol the core
(:class:`toolkit.sansio.control.ControlCore`) uses: nodes, pre-auth keys (their SHA-256 only) and
counters (``node-id``, ``address``, ``version``). Every method commits before it returns, so a
server that is killed loses nothing it has answered, and a restarted server hands out neither an
ID nor an address twice: the counters only grow.

:class:`SQLiteStore` uses the standard library's ``sqlite3`` in WAL mode (readers never block the
writer; ``synchronous=NORMAL``, which in WAL mode survives a killed process and can lose only the
last commits on power loss, https://sqlite.org/pragma.html#pragma_synchronous). The file carries a
schema version (table ``schema_version``); a file of a newer natkit, or one that is not a database,
is refused with a :class:`~toolkit.errors.UsageError` that names it. ``sqlite3 FILE .dump`` shows
everything; ``SELECT name, addr_v4, addr_v6 FROM nodes`` is the address plan.

:class:`MemoryStore` keeps the same data in dicts, for the ``sim`` backend and the core's tests.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError
from toolkit.sansio.control_api import NodeRecord
from toolkit.types import DiscoPublicKey, Endpoint, NodePublicKey

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    node_key TEXT NOT NULL UNIQUE,       -- nodekey:<64 hex>
    disco_key TEXT NOT NULL,             -- discokey:<64 hex>
    endpoints TEXT NOT NULL,             -- JSON list of "IP:port"
    home_derp INTEGER NOT NULL,
    addr_v4 TEXT NOT NULL UNIQUE,
    addr_v6 TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,               -- seconds since the epoch
    last_seen REAL NOT NULL,
    token_hash TEXT NOT NULL,            -- SHA-256 hex of the node's bearer token
    authkey_hash TEXT NOT NULL           -- SHA-256 hex of the pre-auth key it registered with
);
CREATE INDEX nodes_by_token ON nodes (token_hash);
CREATE TABLE authkeys (key_hash TEXT PRIMARY KEY, added REAL NOT NULL, uses INTEGER NOT NULL DEFAULT 0);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COLUMNS = (
    "id, name, hostname, node_key, disco_key, endpoints, home_derp, addr_v4, addr_v6, created, last_seen, "
    "token_hash, authkey_hash"
)


def _row(node: NodeRecord) -> tuple[Any, ...]:
    return (
        node.id,
        node.name,
        node.hostname,
        str(node.node_key),
        str(node.disco_key),
        json.dumps([str(e) for e in node.endpoints]),
        node.home_derp,
        str(node.addr_v4),
        str(node.addr_v6),
        node.created,
        node.last_seen,
        node.token_hash,
        node.authkey_hash,
    )


def _node(row: tuple[Any, ...]) -> NodeRecord:
    return NodeRecord(
        id=row[0],
        name=row[1],
        hostname=row[2],
        node_key=NodePublicKey.parse(row[3]),
        disco_key=DiscoPublicKey.parse(row[4]),
        endpoints=tuple(Endpoint.parse(e) for e in json.loads(row[5])),
        home_derp=row[6],
        addr_v4=ipaddress.IPv4Address(row[7]),
        addr_v6=ipaddress.IPv6Address(row[8]),
        created=row[9],
        last_seen=row[10],
        token_hash=row[11],
        authkey_hash=row[12],
    )


class SQLiteStore:
    """The control server's database file (``--db FILE``); ``":memory:"`` for a throwaway one."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each statement commits
        except sqlite3.Error as exc:
            raise UsageError(f"--db {self.path}: cannot open ({exc}): check that its directory exists") from None
        try:
            self._prepare()
        except sqlite3.Error as exc:
            self._db.close()
            raise UsageError(
                f"--db {self.path}: not a natkit control database ({exc}): give a new file or one natkit control-server wrote"
            ) from None
        except UsageError:
            self._db.close()
            raise

    def _prepare(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                raise UsageError(f"--db {self.path}: a database of something else (tables {sorted(tables)})")
            self._db.executescript(f"BEGIN; {_SCHEMA} INSERT INTO schema_version VALUES ({SCHEMA_VERSION}); COMMIT;")
        (version,) = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        if version != SCHEMA_VERSION:
            raise UsageError(
                f"--db {self.path}: schema version {version}, this natkit reads {SCHEMA_VERSION}: use a newer natkit"
            )

    def close(self) -> None:
        self._db.close()

    def _one(self, where: str, *args: Any) -> NodeRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE {where}", args).fetchone()
        return _node(row) if row is not None else None

    # --- ControlStore -----------------------------------------------------------------------------
    def nodes(self) -> list[NodeRecord]:
        return [_node(r) for r in self._db.execute(f"SELECT {_COLUMNS} FROM nodes ORDER BY id")]

    def node(self, node_id: int) -> NodeRecord | None:
        return self._one("id = ?", node_id)

    def node_by_key(self, key: NodePublicKey) -> NodeRecord | None:
        return self._one("node_key = ?", str(key))

    def node_by_token(self, token_hash: str) -> NodeRecord | None:
        return self._one("token_hash = ?", token_hash)

    def put_node(self, node: NodeRecord) -> None:
        marks = ", ".join("?" * 13)
        self._db.execute(f"INSERT OR REPLACE INTO nodes ({_COLUMNS}) VALUES ({marks})", _row(node))

    def counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row is not None else 0

    def bump(self, name: str) -> int:
        sql = (
            "INSERT INTO counters (name, value) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
        )
        (value,) = self._db.execute(sql, (name,)).fetchone()
        return int(value)

    def add_authkey(self, key_hash: str, now: float) -> None:
        self._db.execute("INSERT OR IGNORE INTO authkeys (key_hash, added) VALUES (?, ?)", (key_hash, now))

    def use_authkey(self, key_hash: str) -> None:
        self._db.execute("UPDATE authkeys SET uses = uses + 1 WHERE key_hash = ?", (key_hash,))

    def authkey_uses(self) -> dict[str, int]:
        """Registrations per pre-auth key hash (for reports and tests)."""
        return {k: u for k, u in self._db.execute("SELECT key_hash, uses FROM authkeys")}


@dataclass
class MemoryStore:
    """The same store in dicts: nothing survives the process (the ``sim`` backend, tests)."""

    _nodes: dict[int, NodeRecord] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)
    _authkeys: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        return None

    def nodes(self) -> list[NodeRecord]:
        return [self._nodes[i] for i in sorted(self._nodes)]

    def node(self, node_id: int) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def node_by_key(self, key: NodePublicKey) -> NodeRecord | None:
        return next((n for n in self._nodes.values() if n.node_key == key), None)

    def node_by_token(self, token_hash: str) -> NodeRecord | None:
        return next((n for n in self._nodes.values() if n.token_hash == token_hash), None)

    def put_node(self, node: NodeRecord) -> None:
        for other in self._nodes.values():  # the UNIQUE constraints of the SQLite schema
            same = other.node_key == node.node_key or other.addr_v4 == node.addr_v4 or other.addr_v6 == node.addr_v6
            if other.id != node.id and same:
                raise ValueError(f"node {node.id} would share a key or an address with node {other.id}")
        self._nodes[node.id] = node

    def counter(self, name: str) -> int:
        return self._counters.get(name, 0)

    def bump(self, name: str) -> int:
        self._counters[name] = self._counters.get(name, 0) + 1
        return self._counters[name]

    def add_authkey(self, key_hash: str, now: float) -> None:
        self._authkeys.setdefault(key_hash, 0)

    def use_authkey(self, key_hash: str) -> None:
        if key_hash in self._authkeys:
            self._authkeys[key_hash] += 1

    def authkey_uses(self) -> dict[str, int]:
        return dict(self._authkeys)


__all__ = ["MemoryStore", "SCHEMA_VERSION", "SQLiteStore"]
