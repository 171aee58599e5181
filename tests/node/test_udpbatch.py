"""UDP GSO sends and GRO receives (toolkit/node/udpbatch.py) over real loopback sockets."""

from __future__ import annotations

import random
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.node import udpbatch


def test_runs_group_one_destination_and_one_size() -> None:
    d = [(b"a" * 100, "x"), (b"b" * 100, "x"), (b"c" * 40, "x"), (b"d" * 100, "x"), (b"e" * 100, "y")]
    runs = list(udpbatch.gso_runs(d))
    assert [(len(bufs), size, dest) for bufs, size, dest in runs] == [(3, 100, "x"), (1, 100, "x"), (1, 100, "y")]
    assert [b for bufs, _, _ in runs for b in bufs] == [x for x, _ in d]  # order kept, nothing lost


def test_runs_respect_the_segment_and_byte_limits() -> None:
    many = [(bytes(10), 1)] * (udpbatch.GSO_MAX_SEGMENTS + 5)
    assert [len(b) for b, _, _ in udpbatch.gso_runs(many)] == [udpbatch.GSO_MAX_SEGMENTS, 5]
    big = [(bytes(1400), 1)] * 60
    assert all(sum(map(len, b)) <= udpbatch.GSO_MAX_BYTES for b, _, _ in udpbatch.gso_runs(big))


@given(st.lists(st.tuples(st.integers(1, 1500), st.integers(0, 2)), max_size=200))
def test_runs_are_valid_gso_batches(spec: list[tuple[int, int]]) -> None:
    datagrams = [(bytes([i % 256]) * n, dest) for i, (n, dest) in enumerate(spec)]
    out = []
    for bufs, size, dest in udpbatch.gso_runs(datagrams):
        assert all(len(b) == size for b in bufs[:-1]) and len(bufs[-1]) <= size
        assert len(bufs) <= udpbatch.GSO_MAX_SEGMENTS and sum(map(len, bufs)) <= udpbatch.GSO_MAX_BYTES
        out += [(b, dest) for b in bufs]
    assert out == datagrams


def _receiver(gro: bool) -> socket.socket:
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    r.settimeout(2)
    if gro:
        assert udpbatch.enable_gro(r)
    return r


@pytest.mark.parametrize("gro", [True, False], ids=["receiver-with-gro", "receiver-without-gro"])
def test_gso_batches_arrive_as_the_same_datagrams(gro: bool) -> None:
    rng = random.Random(5)
    recv, send = _receiver(gro), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sent: list[bytes] = []
        got: list[bytes] = []
        glued = 0
        for _ in range(30):  # one batch at a time, read back before the next (no receive-buffer overflow)
            size = rng.choice([32, 80, 1232, 1440])
            count = rng.randint(2, 20)
            batch = [rng.randbytes(size) for _ in range(count - 1)] + [rng.randbytes(rng.randint(1, size))]
            for bufs, seg, _ in udpbatch.gso_runs([(b, 0) for b in batch]):
                udpbatch.send_segments(send, bufs, seg, recv.getsockname())
            sent += batch
            while len(got) < len(sent):
                data, anc, _flags, _ = recv.recvmsg(udpbatch.RECV_SIZE, udpbatch.ANC_SIZE)
                parts = udpbatch.split_gro(data, anc)
                glued += len(parts) > 1
                got += parts
        assert got == sent
        if not gro:
            assert glued == 0  # the kernel segmented every batch for a receiver without GRO
    finally:
        recv.close()
        send.close()


def test_split_gro_without_control_message_is_one_datagram() -> None:
    assert udpbatch.split_gro(b"x" * 3000, []) == [b"x" * 3000]
    anc = [(udpbatch.SOL_UDP, udpbatch.UDP_GRO, (1000).to_bytes(4, "little"))]
    assert [len(p) for p in udpbatch.split_gro(b"y" * 2500, anc)] == [1000, 1000, 500]
