"""The packet toolkit walk-through behind ``natkit demo`` (until the node exists).

It crafts one of each frame natkit speaks (STUN, disco, WireGuard, DERP), seals and opens a
disco message with two lab nodes' keys, runs a real WireGuard handshake and encrypts a ping, classifies every datagram the way magicsock's
single-socket demux does (protocols.md §4.11), writes everything to a pcap with a keys file,
and reads the pcap back through the sniffer's offline pipeline, printing the dissection.
Deterministic: keys come from fixed seeds and nonces from a seeded generator, so the same
version of natkit prints the same bytes every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from toolkit.codec import demux, derp, disco, stun, wireguard
from toolkit.crypto import derp as derp_crypto
from toolkit.crypto import disco as disco_crypto
from toolkit.crypto import keys, noise
from toolkit.errors import OpenError
from toolkit.packets import pcapio
from toolkit.packets.keyring import Keyring, keys_path_for
from toolkit.types import Endpoint, TxID

# The lab: node A behind a NAT (192.168.1.10 -> 203.0.113.7), node B behind another
# (192.168.2.20 -> 198.51.100.9), a STUN server and a DERP relay on the internet.
A_LAN, A_WAN, B_LAN, B_WAN = "192.168.1.10", "203.0.113.7", "192.168.2.20", "198.51.100.9"
STUN_SRV, DERP_SRV = "203.0.113.200", "203.0.113.201"
WG_PORT, A_WAN_PORT, B_WAN_PORT = 41641, 40001, 50123


def _hex(data: bytes, width: int = 24) -> str:
    rows = [data[i : i + width].hex(" ") for i in range(0, len(data), width)]
    return "\n".join("      " + r for r in rows)


def _icmp_echo(src: str, dst: str, icmp_type: int) -> bytes:
    """A minimal IPv4 ICMP echo (RFC 792) with correct checksums: the packet inside the tunnel."""
    body = bytes([icmp_type, 0, 0, 0, 0, 7, 0, 1]) + b"natkit demo ping"
    body = body[:2] + pcapio.checksum(body).to_bytes(2, "big") + body[4:]
    hdr = bytearray(20)
    hdr[0], hdr[8], hdr[9] = 0x45, 64, 1
    hdr[2:4] = (20 + len(body)).to_bytes(2, "big")
    hdr[12:16], hdr[16:20] = (bytes(int(x) for x in a.split(".")) for a in (src, dst))
    hdr[10:12] = pcapio.checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + body


def run(out_dir: str | Path, say: Callable[[str], None] = print, dissect: bool = True) -> Path:
    """Print the walk-through; write ``out_dir/natkit-demo.pcap`` (+ keys file); return the pcap path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2024)
    a_disco, a_disco_pub = keys.disco_key_pair(b"demo disco A")
    b_disco, b_disco_pub = keys.disco_key_pair(b"demo disco B")
    a_node, a_node_pub = keys.node_key_pair(b"demo node A")
    b_node, b_node_pub = keys.node_key_pair(b"demo node B")
    derp_priv, derp_pub = keys.node_key_pair(b"demo derp server")
    frames: list[tuple[str, int, str, int, bytes]] = []  # src, sport, dst, dport, UDP payload

    say("natkit demo: the packet toolkit, one frame of each kind\n")
    say("The lab: node A 192.168.1.10 behind NAT 203.0.113.7, node B 192.168.2.20 behind NAT 198.51.100.9,")
    say(f"a STUN server at {STUN_SRV}:3478 and a DERP relay at {DERP_SRV}.")
    say(f"  A  nodekey {a_node_pub.short()}  disco {a_disco_pub.short()}")
    say(f"  B  nodekey {b_node_pub.short()}  disco {b_disco_pub.short()}\n")

    # 1. STUN ----------------------------------------------------------------------------
    say("1. STUN (RFC 8489): A asks the STUN server how the internet sees it")
    txid = TxID(rng.randbytes(12))
    req = stun.tailnode_request(txid)
    say(f"   A -> STUN  {stun.decode(req).summary()}  ({len(req)} bytes, Tailscale's exact request)")
    say(_hex(req))
    resp = stun.binding_response(txid, Endpoint.parse(f"{A_WAN}:{A_WAN_PORT}"))
    say(f"   STUN -> A  {stun.decode(resp).summary()}")
    say(f"   The NAT rewrote {A_LAN}:{WG_PORT} to {A_WAN}:{A_WAN_PORT}; the server XORs it with the magic cookie.\n")
    frames += [(A_WAN, A_WAN_PORT, STUN_SRV, 3478, req), (STUN_SRV, 3478, A_WAN, A_WAN_PORT, resp)]

    # 2. disco ---------------------------------------------------------------------------
    say("2. disco: sealed NaCl boxes between the nodes' disco keys (protocols.md §1)")
    ping = disco.Ping(TxID(rng.randbytes(12)), a_node_pub)
    sealed = disco_crypto.seal_message(ping, a_disco, b_disco_pub, nonce=rng.randbytes(24))
    wrapper = disco.decode_wrapper(sealed)
    say(f"   A -> B  {ping.summary()}")
    say(f"   on the wire: {len(sealed)} bytes = magic 'TS💬' + A's disco key in clear + nonce + box")
    say(f"   {wrapper.summary()}")
    sender, opened = disco_crypto.open_message(sealed, b_disco)
    say(f"   B opens it with its private key: from {sender.short()} -> {opened.summary()}")
    pong = disco.Pong(ping.txid, Endpoint.parse(f"{A_WAN}:{A_WAN_PORT}"))
    sealed_pong = disco_crypto.seal_message(pong, b_disco, a_disco_pub, nonce=rng.randbytes(24))
    say(f"   B -> A  {pong.summary()}  (the Pong tells A how B sees it, like STUN)")
    cmm = disco.CallMeMaybe((Endpoint.parse(f"{A_WAN}:{A_WAN_PORT}"), Endpoint.parse(f"{A_LAN}:{WG_PORT}")))
    sealed_cmm = disco_crypto.seal_message(cmm, a_disco, b_disco_pub, nonce=rng.randbytes(24))
    say(f"   A -> B over DERP  {cmm.summary()}: 'ping me at these addresses, now'")
    try:
        disco_crypto.open_message(sealed, a_disco)
        say("   !! a stranger opened the box")
    except OpenError as exc:  # the lesson: only the addressee can open it
        say(f"   A's own key cannot open what A sealed to B: {type(exc).__name__}\n")
    frames += [
        (A_WAN, A_WAN_PORT, B_WAN, B_WAN_PORT, sealed),
        (B_WAN, B_WAN_PORT, A_WAN, A_WAN_PORT, sealed_pong),
    ]

    # 3. WireGuard -----------------------------------------------------------------------
    say("3. WireGuard: a real Noise_IKpsk2 handshake between A and B, then an encrypted ping (protocols.md §8)")
    init, i_state = noise.create_initiation(
        a_node, b_node_pub, ephemeral=rng.randbytes(32), now_wall=1_700_000_000.0, sender_index=0x1A2B3C4D
    )
    _, _, r_state = noise.consume_initiation(b_node, init)
    resp, b_keys = noise.create_response(r_state, ephemeral=rng.randbytes(32), sender_index=0x5E6F7081, now=0.0)
    a_keys = noise.consume_response(i_state, resp, now=0.0)
    cookie = wireguard.CookieReply(0x1A2B3C4D, rng.randbytes(24), rng.randbytes(32)).encode()
    ping_ip = _icmp_echo("100.64.0.1", "100.64.0.2", 8)
    wg_packets = [
        ("A -> B", init),
        ("B -> A", resp),
        ("B -> A, only when B is under load", cookie),
        ("A -> B", noise.seal_transport(a_keys, 0, noise.pad(ping_ip, 1420))),
        ("B -> A", noise.seal_transport(b_keys, 0, noise.pad(_icmp_echo("100.64.0.2", "100.64.0.1", 0), 1420))),
        ("A -> B", noise.seal_transport(a_keys, 1, b"")),
    ]
    for who, data in wg_packets:
        say(f"   {who:<34} {wireguard.decode(data).summary()}  ({len(data)} bytes)")
        src_dst = (
            (A_WAN, A_WAN_PORT, B_WAN, B_WAN_PORT) if who.startswith("A") else (B_WAN, B_WAN_PORT, A_WAN, A_WAN_PORT)
        )
        frames.append((*src_dst, data))
    say(f"   both sides derived the same keys: A sends with what B receives with: {a_keys.send_key == b_keys.recv_key}")
    say("   the ping inside is only visible with the session keys (written to the keys file below)\n")

    # 4. DERP ----------------------------------------------------------------------------
    say("4. DERP: the relay that carries packets from the first moment (protocols.md §2)")
    up = derp.upgrade_request("derp.lab.example")
    say("   A -> relay  " + up.split(b"\r\n")[0].decode() + "  (Upgrade: DERP)")
    say("   relay -> A  " + derp.upgrade_response(derp_pub).split(b"\r\n")[0].decode())
    info = derp_crypto.seal_client_info(derp.ClientInfoJSON(), a_node, derp_pub, nonce=rng.randbytes(24))
    derp_frames: list[derp.Frame] = [
        derp.ServerKey(derp_pub),
        info,
        derp.SendPacket(b_node_pub, sealed_cmm),
        derp.RecvPacket(a_node_pub, sealed_cmm),
        derp.KeepAlive(),
        derp.PeerGone(b_node_pub, derp.PeerGoneReason.NOT_HERE),
    ]
    for f in derp_frames:
        say(f"   {f.summary()}")
    # A's TCP connection to the relay: the upgrade, then frames both ways (what the pcap holds).
    to_relay = [up, info.encode() + derp.SendPacket(b_node_pub, sealed_cmm).encode()]
    from_relay = [derp.upgrade_response(derp_pub) + derp.ServerKey(derp_pub).encode(), derp.KeepAlive().encode()]
    derp_stream = [(True, to_relay[0]), (False, from_relay[0]), (True, to_relay[1]), (False, from_relay[1])]
    opened_info = derp_crypto.open_client_info(info, derp_priv)
    say(f"   the relay opens ClientInfo: {opened_info.to_json().decode()}\n")

    # 5. demux ---------------------------------------------------------------------------
    say("5. One UDP socket for everything: magicsock's demux (protocols.md §4.11)")
    for _, _, _, _, payload in frames[:1] + frames[2:3] + frames[4:5]:
        say(f"   first bytes {payload[:6].hex(' ')}  ->  {demux.classify(payload).value}")
    say("")

    # 6. pcap ----------------------------------------------------------------------------
    pcap = out / "natkit-demo.pcap"
    seq = {True: 1000, False: 5000}
    with pcapio.PcapWriter(pcap) as w:
        for i, (src, sport, dst, dport, payload) in enumerate(frames):
            w.write(pcapio.udp_frame(src, sport, dst, dport, payload), ts=1_700_000_000 + i * 0.01)
        for i, (outbound, data) in enumerate(derp_stream):
            ends = (A_WAN, 40002, DERP_SRV, 80) if outbound else (DERP_SRV, 80, A_WAN, 40002)
            frame = pcapio.tcp_frame(*ends, data, seq=seq[outbound], ack=seq[not outbound])
            seq[outbound] += len(data)
            w.write(frame, ts=1_700_000_001 + i * 0.01)
    keyfile = keys_path_for(pcap)
    lab_keys = Keyring([a_disco, b_disco])
    lab_keys.add_session_keys(a_keys, "A<->B")
    lab_keys.save(keyfile)
    say(f"6. Wrote {len(frames)} UDP datagrams and {len(derp_stream)} DERP TCP segments to {pcap}")
    say(f"   and the lab's keys to {keyfile}")
    if dissect:
        say("   Reading it back through the sniffer's pipeline (disco and WireGuard opened with the keys):")
        from toolkit.packets.dissect import Analyzer
        from toolkit.packets.sniffer import read_file

        analyzer = Analyzer(lab_keys)
        events = list(read_file(pcap, analyzer=analyzer))
        t0 = events[0].ts if events else 0.0
        for ev in events:
            say("   " + ev.line(t0))
        say("   " + analyzer.stats.format().replace("\n", "\n   "))
        first_ping = next((ev for ev in events if "Ping" in ev.line()), None)
        if first_ping is not None:
            say("\n   The first disco Ping, dissected by scapy with natkit's layers and opened with B's key:")
            for line in first_ping.dissection().splitlines():
                say("   " + line)
    say("\nTry: natkit decode " + str(pcap) + " --keys " + str(keyfile) + " -v")
    return pcap
