"""Load: 200 clients exchange 100,000 packets through ``natkit derp-server`` while one client sends garbage.

The server runs as its own process (:func:`tests.support.natkit_service`), so on this 2-core machine it
has a core to itself and the test's clients share the other: the server's event loop never waits for
the clients' work, and the CLI path (start line, SIGTERM, stop line) is exercised too.

Every packet carries (sender, addressee, sequence number); every client checks that each packet it
gets is addressed to it and that RecvPacket's source key is the sender's key. Rounds of 50 packets per
client keep each client's share below the server's write high-water mark, so nothing is dropped for a
stalled reader and every packet must arrive exactly once.
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
import time

from tests.services.derpwire import RawClient, connect
from tests.support import natkit_service
from toolkit.codec import derp

CLIENTS = 200
ROUNDS = 10
PER_ROUND = 50  # packets each client sends per round: 200 * 10 * 50 = 100,000
PAD = bytes(84)  # 16-byte header + 84 = 100-byte packets
_ID = struct.Struct(">HHIQ")  # sender, addressee, sequence, round-trip check


async def _receive(me: int, client: RawClient, clients: list[RawClient], got: list[set[tuple[int, int]]]) -> None:
    keys = {c.pub: i for i, c in enumerate(clients)}
    while True:
        frame = await client.frame(timeout=60)
        if not isinstance(frame, derp.RecvPacket):
            continue
        sender, addressee, seq, check = _ID.unpack_from(frame.packet)
        assert addressee == me, f"client {me} got a packet for {addressee}"
        assert keys[frame.src] == sender, f"packet from {sender} arrived with the key of {keys.get(frame.src)}"
        assert check == sender * 1_000_003 + seq and frame.packet[_ID.size :] == PAD
        assert (sender, seq) not in got[me], f"duplicate {sender}/{seq} at {me}"
        got[me].add((sender, seq))


async def _load(port: int) -> tuple[int, float]:
    clients = list(await asyncio.gather(*(connect("127.0.0.1", port) for _ in range(CLIENTS))))
    garbage = await connect("127.0.0.1", port)
    got: list[set[tuple[int, int]]] = [set() for _ in clients]
    readers = [asyncio.create_task(_receive(i, c, clients, got)) for i, c in enumerate(clients)]
    rng = random.Random(4)
    expected: list[set[tuple[int, int]]] = [set() for _ in clients]
    total = 0
    started = time.monotonic()
    try:
        for round_no in range(ROUNDS):
            for sender, client in enumerate(clients):
                frames = []
                for k in range(PER_ROUND):
                    seq = round_no * PER_ROUND + k
                    addressee = rng.randrange(CLIENTS)
                    expected[addressee].add((sender, seq))
                    packet = _ID.pack(sender, addressee, seq, sender * 1_000_003 + seq) + PAD
                    frames.append(derp.SendPacket(clients[addressee].pub, packet).encode())
                client.send(b"".join(frames))
            total += CLIENTS * PER_ROUND
            if round_no == 3:  # garbage mid-load: a NotePreferred of 2 bytes
                garbage.send(derp.frame_header(derp.FrameType.NOTE_PREFERRED, 2) + b"\x01\x01")
            await asyncio.gather(*(c.drain() for c in clients))
            deadline = time.monotonic() + 30
            while sum(map(len, got)) < total:
                assert time.monotonic() < deadline, f"round {round_no}: {sum(map(len, got))} of {total} arrived"
                for r in readers:
                    if r.done():
                        r.result()  # re-raise a failed check
                await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        assert got == expected
        assert await garbage.closed(timeout=5)
        return total, elapsed
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for c in [*clients, garbage]:
            c.close()


def test_200_clients_100k_packets_and_one_garbage_client() -> None:
    with natkit_service("derp-server", "--listen", "127.0.0.1:0") as server:
        match = re.search(r"http://127\.0\.0\.1:(\d+)/derp", server.start_line)
        assert match, server.start_line
        total, elapsed = asyncio.run(_load(int(match.group(1))))
        assert server.stop() == 0
    stop_line = server.output().splitlines()[-1]
    assert f"relayed {total} packets" in stop_line, stop_line
    assert "bad_frame 1" in stop_line and "dropped: none" in stop_line, stop_line
    print(f"\n{total} packets through {CLIENTS} clients in {elapsed:.2f} s ({total / elapsed:,.0f} packets/s)")
