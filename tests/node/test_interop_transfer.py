"""Acceptance tests of natkit's WireGuard against wireguard-go (natkit issue 3), in two namespaces
joined by a veth that carries IPv4 and IPv6 (:func:`tests.node.linked_namespaces`).

natkit runs in namespace ``a`` (``natkit wg up``, or the driver with shortened timers), wireguard-go
in namespace ``b``; the tunnel addresses are 10.77.0.1 (natkit) and 10.77.0.2 (wireguard-go).
Pings through the tunnel in both directions are tests/cli/test_wg_cli.py's; here:

* a 50 MiB TCP transfer with the same sha256 at both ends, over an IPv4 and an IPv6 outer path, with
  natkit and with wireguard-go starting the handshake (only the side that knows the other's
  endpoint can, so each configuration decides who initiates); the throughput is printed (``-s``);
* several rekeys during one transfer (natkit's REKEY_AFTER_TIME shortened to 3 s) without losing
  the TCP stream;
* the tunnel comes back after wireguard-go restarts and after natkit restarts.

The TCP programs, the configs and the process handling are in :mod:`tests.node.transfer`; every
process is killed and every namespace deleted on exit, also when a test fails.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from tests.node import Link, linked_namespaces, ping
from tests.node.transfer import (
    GO_INNER,
    NATKIT_INNER,
    Family,
    Transfer,
    configured_wireguard_go,
    natkit_interfaces,
    program,
    tcp_transfer,
    tunnel_configs,
    write_config,
)
from tests.support import require_root, require_tool, wait_until
from toolkit.node import uapi
from toolkit.node.tun import link_exists
from toolkit.node.uapi import PeerInfo
from toolkit.types import Endpoint

pytestmark = pytest.mark.slow

SIZE = 50 * 2**20  # the "50 MB"
NATKIT_PORT, GO_PORT = 51941, 51942
# a side whose peer answers nothing it can authenticate starts a new handshake after
# KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ up to 0.334 s jitter) = 15.3 s (protocols.md §8.5)
STALE_SESSION_RECOVERY = 10 + 5 + 0.334 + 10  # and 10 s of slack for a busy machine


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"nka{tag}", f"nkgo{tag}"


def _peer(name: str) -> PeerInfo:
    device = uapi.get_device(name)
    assert len(device.peers) == 1
    return device.peers[0]


def _outer(link: Link, family: Family, side: Literal["a", "b"], port: int) -> Endpoint:
    ip = {("a", 4): link.a4, ("a", 6): link.a6, ("b", 4): link.b4, ("b", 6): link.b6}[side, family]
    return Endpoint.parse(f"[{ip}]:{port}" if family == 6 else f"{ip}:{port}")


def _check(transfer: Transfer) -> None:
    assert transfer.sent_bytes == transfer.received_bytes == SIZE
    assert transfer.sent_sha256 == transfer.received_sha256 == transfer.echoed_sha256


def _pings(netns: str, address: str) -> Callable[[], bool]:
    return lambda: ping(netns, address, timeout=1.0)


# --- 50 MiB over the tunnel ----------------------------------------------------------------------


@pytest.mark.parametrize("initiator", ["natkit", "wireguard-go"])
@pytest.mark.parametrize("family", [4, 6], ids=["outer-ipv4", "outer-ipv6"])
def test_50_mib_tcp_transfer(family: Family, initiator: str, tmp_path: Path) -> None:
    """The initiator is the only side that knows its peer's endpoint, and it also sends the data,
    so the four cases measure both directions of the data path: natkit encrypting (natkit ->
    wireguard-go) and natkit decrypting (wireguard-go -> natkit)."""
    require_root()
    require_tool("wg", "wireguard-tools")
    natkit_name, go_name = _names()
    natkit_first = initiator == "natkit"
    with linked_namespaces() as link, natkit_interfaces() as natkit:
        natkit_cfg, go_cfg = tunnel_configs(
            link,
            family,
            natkit_port=NATKIT_PORT,
            go_port=GO_PORT,
            natkit_knows_endpoint=natkit_first,
            go_knows_endpoint=not natkit_first,
        )
        with configured_wireguard_go(link.b, go_name, go_cfg, tmp_path):
            natkit.up(write_config(tmp_path, natkit_name, natkit_cfg), link.a)
            if natkit_first:  # the TCP SYN starts the handshake; it waits in natkit's queue until done
                transfer = tcp_transfer(link.a, link.b, GO_INNER, SIZE, timeout=90)
            else:
                transfer = tcp_transfer(link.b, link.a, NATKIT_INNER, SIZE, timeout=90)
            _check(transfer)
            # the responder learned the initiator's endpoint from the handshake, over the family under test
            ours, theirs = _peer(natkit_name), _peer(go_name)
            if natkit_first:
                assert theirs.endpoint == _outer(link, family, "a", NATKIT_PORT)
            else:
                assert ours.endpoint == _outer(link, family, "b", GO_PORT)
            # and the bytes went through natkit's device (its counters include the headers: more than SIZE)
            assert (ours.tx_bytes if natkit_first else ours.rx_bytes) > SIZE
            sender = "natkit -> wireguard-go" if natkit_first else "wireguard-go -> natkit"
            print(
                f"\nthroughput {sender}, {initiator} initiates, outer IPv{family}: {SIZE / 2**20:.0f} MiB "
                f"in {transfer.seconds:.2f} s = {transfer.mib_per_s:.1f} MiB/s"
            )


# --- rekeying under load -------------------------------------------------------------------------


def test_rekeys_during_a_transfer_keep_the_tcp_stream(tmp_path: Path) -> None:
    """natkit's driver with REKEY_AFTER_TIME = 3 s; the sender is paced to 3 MiB/s, so 50 MiB take
    16.7 s. natkit, the initiator of every session, starts a new handshake on send once its session
    is older than REKEY_AFTER_TIME (whitepaper §6.2), but sends at most one initiation per
    REKEY_TIMEOUT = 5 s (wireguard-go ``SendHandshakeInitiation``), so the rekeys come about 5 s
    apart: three during the transfer. wireguard-go keeps its own timers (120 s) and answers."""
    require_root()
    require_tool("wg", "wireguard-tools")
    natkit_name, go_name = _names()
    keys_out = tmp_path / "sessions.json"
    with linked_namespaces() as link:
        natkit_cfg, go_cfg = tunnel_configs(
            link, 4, natkit_port=NATKIT_PORT, go_port=GO_PORT, natkit_knows_endpoint=True, go_knows_endpoint=False
        )
        conf = write_config(tmp_path, natkit_name, natkit_cfg)
        drv_args = ["driver", str(conf), "--rekey-after-time", "3", "--keys-out", str(keys_out)]
        try:
            with configured_wireguard_go(link.b, go_name, go_cfg, tmp_path), program(link.a, *drv_args) as driver:
                assert driver.next_line(15) == {"up": natkit_name}
                assert wait_until(_pings(link.a, GO_INNER), 10), "natkit -> wireguard-go before the transfer"
                first = _peer(go_name).last_handshake
                assert first is not None
                before = _sessions(keys_out)
                transfer = tcp_transfer(link.a, link.b, GO_INNER, SIZE, rate=3 * 2**20, timeout=60)
                during = _sessions(keys_out) - before
                last = _peer(go_name).last_handshake
        finally:
            uapi.socket_path(natkit_name).unlink(missing_ok=True)  # left behind only if the driver was killed
    _check(transfer)
    assert transfer.seconds > 10
    # 16.7 s of traffic, a new session 3 s after the last but at most one initiation per 5 s: 3 rekeys
    assert during >= 3, f"only {during} handshake(s) during {transfer.seconds:.1f} s of transfer"
    assert last is not None and last - first > 8  # wireguard-go saw them too
    print(f"\nrekeys: {during} handshakes during a {transfer.seconds:.1f} s transfer; sha256 equal at both ends")


def _sessions(keys_out: Path) -> int:
    """Sessions in the driver's keys file: two entries (in, out) per handshake (toolkit.node.wgdevice)."""
    return len(json.loads(keys_out.read_text())["wireguard"]) // 2 if keys_out.exists() else 0


# --- restarts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialer", ["natkit", "wireguard-go"])
def test_each_side_recovers_when_the_other_restarts(dialer: str, tmp_path: Path) -> None:
    """Only ``dialer`` knows its peer's endpoint, and it sends a persistent keepalive every second;
    the other side only answers. After a restart a side has no session, while its peer still holds
    the old one, whose packets the restarted side cannot open and drops. Two cases:

    * the dialer restarts: its persistent keepalive finds no session and starts a handshake at once
      (whitepaper §6.5), so the tunnel is back in a moment and both sides can ping;
    * the answering side restarts: it cannot initiate (no endpoint), and keepalives do not make the
      dialer rehandshake; the dialer's next *data* packet (a ping) that gets no authenticated answer
      makes it start a new handshake after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT = 15 s (§6.2).
      Until then the restarted side cannot even send: it has no endpoint for its peer.

    wireguard-go restarts as a user does it: kill it, start it, ``wg setconf`` the same config,
    address, link up, route. natkit restarts with ``natkit wg down`` + ``natkit wg up``."""
    require_root()
    require_tool("wg", "wireguard-tools")
    natkit_name, go_name = _names()
    natkit_dials = dialer == "natkit"
    with linked_namespaces() as link, natkit_interfaces() as natkit:
        natkit_cfg, go_cfg = tunnel_configs(
            link,
            4,
            natkit_port=NATKIT_PORT,
            go_port=GO_PORT,
            natkit_knows_endpoint=natkit_dials,
            go_knows_endpoint=not natkit_dials,
            natkit_keepalive=1 if natkit_dials else None,
            go_keepalive=None if natkit_dials else 1,
        )
        conf = write_config(tmp_path, natkit_name, natkit_cfg)
        both_ways = ((link.a, GO_INNER), (link.b, NATKIT_INNER))
        dial_first = both_ways if natkit_dials else both_ways[::-1]  # the dialer's side pings first

        with configured_wireguard_go(link.b, go_name, go_cfg, tmp_path):
            natkit.up(conf, link.a)
            for ns, address in dial_first:
                assert wait_until(_pings(ns, address), 10), f"{ns} -> {address} before any restart"

        # wireguard-go was killed and its TUN went with it; natkit still holds the old session
        assert wait_until(lambda: not link_exists(go_name, link.b), 5)
        with configured_wireguard_go(link.b, go_name, go_cfg, tmp_path):
            took = _ping_back(dial_first, quick=not natkit_dials)
            print(f"\nwireguard-go restarted ({dialer} dials): ping back after {took:.1f} s")

            natkit.down(natkit_name)
            natkit.up(conf, link.a)
            took = _ping_back(dial_first, quick=natkit_dials)
            print(f"natkit restarted ({dialer} dials): ping back after {took:.1f} s")


def _ping_back(order: tuple[tuple[str, str], ...], *, quick: bool) -> float:
    """Seconds until the tunnel works again after a restart; then it must work both ways.

    ``order`` is (dialer's namespace, address behind the answerer), (answerer's namespace, address
    behind the dialer). ``quick``: the dialer restarted, and the answerer pings first: it still holds
    the stale session, so its ping goes through only once the dialer's keepalive has made a new one,
    without any data. Otherwise the dialer pings first: that data is what makes it rehandshake.
    """
    start = time.monotonic()
    limit = 10.0 if quick else STALE_SESSION_RECOVERY
    ns, address = order[1] if quick else order[0]
    assert wait_until(_pings(ns, address), limit), f"{ns} -> {address} did not come back within {limit:.0f} s"
    took = time.monotonic() - start
    for ns, address in order:
        assert ping(ns, address, timeout=2.0), f"{ns} -> {address} after the restart"
    return took
