"""Two NodeCores in memory (issue 6): STUN, DERP, disco and WireGuard with real bytes, two NATs.

The harness (:mod:`tests.sansio.nodeharness`) has port-preserving APDF NATs, a StunServerCore, a trivial
DERP relay and a mini control that pushes netmaps when a node's endpoints change."""

from __future__ import annotations

import json

from tests.sansio.nodeharness import Lab, make_lab, start, udp_packet
from toolkit.sansio.nodestatus import DerpRegionsWanted, EndpointsChanged, PeerStateChanged, PingResult
from toolkit.types import Endpoint


def pkt(lab: Lab, n: int) -> bytes:
    return udp_packet("100.64.0.1", "100.64.0.2", 5000, 6000, f"hello {n} ".encode() * 20)


def send(lab: Lab, n: int) -> bytes:
    packet = pkt(lab, n)
    a = lab.host("a")
    lab.do(lambda: a.core.send_ip_packet(packet, lab.now))
    return packet


def test_endpoints_discovered_by_stun_and_reported() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    a = lab.host("a")
    assert a.core.endpoints == (a.public, a.lan)  # STUN-mapped first, then local
    changed = [ev for _, ev in a.events if isinstance(ev, EndpointsChanged)]
    assert changed[-1].endpoints == (a.public, a.lan)
    assert any(isinstance(ev, DerpRegionsWanted) and ev.regions == (1,) for _, ev in a.events)


def test_packet_goes_over_derp_first_then_udp_and_both_reach_direct() -> None:
    lab = make_lab()
    lab.udp_blocked_until = 3.0  # the direct path opens late: packets flow over DERP meanwhile
    start(lab)
    lab.run_until(0.5)
    b = lab.host("b")
    sent = []
    for n in range(20):
        sent.append(send(lab, n))
        lab.run_until(lab.now + 1.0)
    assert [p for _, _, p in b.received] == sent  # every packet arrived intact, in order
    paths = [path for _, path, _ in b.received]
    assert paths[0] == "derp" and paths[-1] == "udp"
    switch = paths.index("udp")
    assert set(paths[:switch]) == {"derp"} and set(paths[switch:]) == {"udp"}, paths
    for name in ("a", "b"):
        st = lab.host(name).core.status(lab.now)
        assert len(st.peers) == 1 and st.peers[0].path == "direct", st.format()
        assert st.peers[0].state == "DirectActive"
    assert lab.host("a").core.counters["wg-sent-udp"] > 0 and lab.host("a").core.counters["wg-sent-derp"] > 0


def test_ping_reports_derp_then_direct() -> None:
    lab = make_lab()
    lab.udp_blocked_until = 3.0
    start(lab)
    lab.run_until(1.0)
    a = lab.host("a")
    lab.do(lambda: a.core.ping("b", lab.now))
    lab.run_until(1.5)
    results = [ev for _, ev in a.events if isinstance(ev, PingResult)]
    assert results and results[0].via == "DERP(r1)" and not results[0].is_direct
    assert results[0].format().startswith("pong from b (100.64.0.2) via DERP(r1) in ")
    assert 0.07 < results[0].latency_s < 0.09  # two DERP hops of 40 ms
    for n in range(20):
        send(lab, n)
        lab.run_until(lab.now + 1.0)
    lab.do(lambda: a.core.ping("100.64.0.2", lab.now))
    lab.run_until(lab.now + 0.5)
    last = [ev for _, ev in a.events if isinstance(ev, PingResult)][-1]
    assert last.is_direct and last.via == str(lab.host("b").public)
    assert 0.015 < last.latency_s < 0.03  # two UDP hops of 10 ms


def test_status_json_and_format() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    send(lab, 1)
    lab.run_until(8.0)
    st = lab.host("a").core.status(lab.now)
    obj = json.loads(json.dumps(st.to_json()))
    assert obj["self"]["name"] == "a" and obj["self"]["tunnel_ips"] == ["100.64.0.1"]
    assert obj["self"]["home_region"] == 1 and obj["self"]["derp_connected"] == [1]
    peer = obj["peers"][0]
    for key in ("name", "node_key", "tunnel_ips", "state", "coarse", "path", "endpoint", "latency_s", "tx_bytes"):
        assert key in peer
    assert peer["name"] == "b" and peer["path"] == "direct" and peer["endpoint"] == "203.0.113.1:41641"
    assert peer["tx_bytes"] > 0 and peer["rx_bytes"] > 0
    lines = st.format().splitlines()
    assert lines[0].startswith("100.64.0.1      a            self; home r1, endpoints 198.51.100.1:41641")
    assert lines[1].startswith("100.64.0.2      b            ") and "direct 203.0.113.1:41641" in lines[1]
    assert any(isinstance(ev, PeerStateChanged) and ev.path_kind == "direct" for _, ev in lab.host("a").events)


def test_netmap_removal_drops_the_peer() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    send(lab, 1)
    lab.run_until(2.0)
    lab.members.discard("b")
    lab.do(lab.push_netmaps)
    lab.run_until(3.0)
    a = lab.host("a")
    assert a.core.status(lab.now).peers == ()
    send(lab, 2)
    assert a.core._wg.device.counters["no-route"] == 1
    assert a.core.counters["peers-removed"] == 1


def test_cache_round_trip() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    send(lab, 1)
    lab.run_until(8.0)
    cache = json.loads(json.dumps(lab.host("a").core.export_cache()))
    b_key = str(lab.host("b").core.node_public)
    assert cache["Peers"][b_key][0] == "203.0.113.1:41641"
    fresh = make_lab().host("a").core
    fresh.import_cache(cache)
    fresh.import_cache({"Version": 1, "Peers": {"nodekey:zz": ["1.2.3.4:5"], b_key: ["nope"]}})
    assert fresh.drops["cache-bad-entry"] == 2
    assert fresh.export_cache()["Peers"][b_key][0] == "203.0.113.1:41641"


def test_garbage_is_dropped_and_counted() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    a = lab.host("a")
    b_key = lab.host("b").core.node_public
    src = Endpoint.parse("192.0.2.99:9")
    from toolkit.codec.disco import Ping
    from toolkit.crypto.disco import seal_message
    from toolkit.crypto.keys import disco_key_pair
    from toolkit.types import TxID

    stranger, _ = disco_key_pair(b"stranger")
    disco = seal_message(Ping(TxID(bytes(12))), stranger, a.core.disco_public, bytes(24))
    bad_box = disco[:-1] + bytes([disco[-1] ^ 1])
    for data in (b"", b"\x00" * 10, b"\x01" + bytes(40), bytes(range(100)), disco, bad_box):
        a.core.receive_udp(data, src, lab.now)
        a.core.receive_derp(1, b_key, data, lab.now)
    a.core.receive_derp(1, lab.host("a").core.node_public, b"\x04" + bytes(40), lab.now)
    drops = a.core.status(lab.now).drops
    assert drops["unknown-datagram"] == 2 and drops["derp-unknown"] == 2
    assert drops["disco-unknown-sender"] == 2 and drops["disco-open-failed"] == 2
    assert drops["derp-unknown-peer"] == 1
    assert drops["unknown-type"] >= 2 or drops["unknown-index"] >= 2
    assert any(r.kind == "dropped" and r.reason == "disco-unknown-sender" for r in a.log.records)
    # the node still works
    packet = send(lab, 3)
    lab.run_until(2.0)
    assert lab.host("b").received[-1][2] == packet


def test_wireguard_never_roams_off_the_placeholder() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    send(lab, 1)
    lab.run_until(8.0)
    send(lab, 2)
    lab.run_until(9.0)
    a, b = lab.host("a"), lab.host("b")
    assert b.received[-1][1] == "udp"
    for me, peer in ((a, b), (b, a)):
        wg_peer = me.core._wg.device.peers[peer.core.node_public]
        assert wg_peer.endpoint is not None and str(wg_peer.endpoint).startswith("127.3.3.41:")
    assert not [r for r in b.log.records if r.endpoint is not None and str(r.endpoint).startswith("127.3.3.41")]


def test_udp_blocked_stays_on_derp_and_delivers() -> None:
    lab = make_lab()
    lab.udp_blocked = True
    start(lab)
    lab.run_until(1.0)
    sent = [send(lab, n) for n in range(3)]
    lab.run_until(12.0)
    b = lab.host("b")
    assert [(path, p) for _, path, p in b.received] == [("derp", p) for p in sent]
    st = lab.host("a").core.status(lab.now)
    assert st.peers[0].path == "derp" and 'relay "r1"' in st.format()


def test_periodic_restun_and_a_new_mapping_is_reported() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    a = lab.host("a")
    a.public = Endpoint.parse("198.51.100.1:50000")  # the NAT lost the mapping and picked another port
    lab.run_until(30.0)  # re-STUN after 20..26 s
    assert a.core.endpoints == (a.public, a.lan)
    changed = [ev.endpoints for _, ev in a.events if isinstance(ev, EndpointsChanged)]
    assert changed[-1] == (a.public, a.lan) and len(changed) == 3
    assert lab.host("b").core.status(lab.now).peers[0].name == "a"


def test_wireguard_from_an_unknown_source_is_learnt_and_the_placeholder_kept() -> None:
    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    send(lab, 1)
    lab.run_until(8.0)
    b = lab.host("b")
    b.core._wg.learnt.clear()  # as if disco had never authenticated a's address
    packet = send(lab, 2)
    lab.run_until(8.5)
    assert b.received[-1][1:] == ("udp", packet)
    assert b.core.counters["wg-unknown-source"] >= 1
    assert b.core._wg.learnt[lab.host("a").public] == lab.host("a").core.node_public
    wg_peer = b.core._wg.device.peers[lab.host("a").core.node_public]
    assert str(wg_peer.endpoint).startswith("127.3.3.41:")


def test_peer_without_info_waits_in_query_control_until_the_netmap_has_some() -> None:
    from dataclasses import replace

    from toolkit.sansio.control_netmap import NetMap

    lab = make_lab()
    a, b = lab.host("a"), lab.host("b")
    b_node = replace(b.control_node(), endpoints=(), home_derp=0)
    lab.do(lambda: a.core.set_home_region(1, 0.0))
    lab.do(lambda: a.core.set_netmap(NetMap(1, a.control_node(), (b_node,), None), 0.0))
    assert a.core.flow("b").state.value == "QueryControl"
    b_node = replace(b_node, endpoints=(b.public,), home_derp=2)
    lab.do(lambda: a.core.set_netmap(NetMap(2, a.control_node(), (b_node,), None), 0.1))
    assert [s.value for s in a.core.flow("b").walked][:6] == [
        "Start", "GetInfo", "QueryControl", "StoreInfo", "CheckDirect", "TryDirect",
    ]  # fmt: skip
    assert [ev.regions for _, ev in a.events if isinstance(ev, DerpRegionsWanted)] == [(1,), (1, 2)]


def test_no_network_input_raises() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    lab = make_lab()
    start(lab)
    lab.run_until(1.0)
    a = lab.host("a")
    b_key = lab.host("b").core.node_public
    prefixes = st.sampled_from([b"", b"TS\xf0\x9f\x92\xac", b"\x01\x00\x00\x00", b"\x04\x00\x00\x00", b"\x01\x01\x00"])

    @settings(max_examples=200, deadline=None)
    @given(prefix=prefixes, body=st.binary(max_size=200), via_derp=st.booleans())
    def feed(prefix: bytes, body: bytes, via_derp: bool) -> None:
        data = prefix + body
        if via_derp:
            a.core.receive_derp(1, b_key, data, lab.now)
        else:
            a.core.receive_udp(data, Endpoint.parse("203.0.113.1:41641"), lab.now)

    feed()
    assert sum(a.core.status(lab.now).drops.values()) > 0


def test_a_restarted_peer_gets_a_fresh_wireguard_peer_and_a_new_handshake() -> None:
    import dataclasses

    from toolkit.crypto.keys import disco_key_pair
    from toolkit.sansio.control_netmap import NetMap

    lab = make_lab()
    start(lab)
    lab.run_until(0.5)
    send(lab, 0)
    lab.run_until(3.0)
    a, b = lab.host("a"), lab.host("b")
    assert a.core.status(lab.now).peers[0].last_handshake is not None  # a session with the old bob
    # bob restarted: same node key, a new disco key in the netmap (his old sessions died with him)
    _, new_disco = disco_key_pair(b"bob after a restart")
    reborn = dataclasses.replace(b.control_node(), disco_key=new_disco)
    lab.do(lambda: a.core.set_netmap(NetMap(99, a.control_node(), (reborn,), None), lab.now))
    assert a.core.counters["peer-restarted"] == 1
    assert a.core.status(lab.now).peers[0].last_handshake is None  # no session to ride on
    before = sum(1 for r in a.log.records if r.kind == "sent" and r.detail.startswith("WireGuard Initiation"))
    send(lab, 1)
    lab.run_until(lab.now + 0.5)
    after = sum(1 for r in a.log.records if r.kind == "sent" and r.detail.startswith("WireGuard Initiation"))
    assert after > before  # the next packet starts a handshake at once
