"""The virtual clock and the links (toolkit/lab/sim/clock.py, link.py): event order, cancellation,
seeded streams, latency, bandwidth, loss and jitter, measured through a real two-host network."""

from __future__ import annotations

import pytest

from tests.lab.sim.simnet import ep
from toolkit.errors import UsageError
from toolkit.lab.sim.clock import Scheduler
from toolkit.lab.sim.link import Link, LinkParams
from toolkit.lab.sim.net import Machine, Segment
from toolkit.lab.sim.sockets import UdpSocket


def test_events_run_in_time_then_schedule_order() -> None:
    sched, seen = Scheduler(), list[str]()
    sched.call_at(2.0, seen.append, "c")
    sched.call_at(1.0, seen.append, "a")
    sched.call_at(1.0, seen.append, "b")
    dead = sched.call_at(1.5, seen.append, "cancelled")
    dead.cancel()
    sched.run_until(1.5)
    assert seen == ["a", "b"] and sched.now == 1.5
    assert sched.run() == 1 and seen == ["a", "b", "c"] and sched.now == 2.0


def test_run_while_stops_at_the_deadline() -> None:
    sched = Scheduler()

    def tick() -> None:
        sched.call_later(1.0, tick)

    tick()
    assert sched.run_while(lambda: True, 10.0) is False
    assert sched.now == pytest.approx(10.0)
    with pytest.raises(RuntimeError):
        sched.run(limit=100)


def test_streams_depend_on_seed_and_name_only() -> None:
    a, b = Scheduler(seed=7), Scheduler(seed=7)
    b.rng_for("other").random()  # using another stream first changes nothing
    assert a.rng_for("nat:r1").random() == b.rng_for("nat:r1").random()
    assert Scheduler(seed=8).rng_for("nat:r1").random() != Scheduler(seed=7).rng_for("nat:r1").random()


def test_link_params_are_checked() -> None:
    with pytest.raises(UsageError):
        LinkParams(loss=1.5)
    with pytest.raises(UsageError):
        LinkParams(bandwidth=0)


def _pair(params: LinkParams, seed: int = 0) -> tuple[Scheduler, UdpSocket, list[tuple[float, bytes]]]:
    sched = Scheduler(seed)
    seg = Segment("lan", sched, params)
    a, b = Machine("a", sched), Machine("b", sched)
    a.add_interface("eth0", seg, [(ep("10.0.0.1:0").ip, 24)])
    b.add_interface("eth0", seg, [(ep("10.0.0.2:0").ip, 24)])
    got: list[tuple[float, bytes]] = []
    UdpSocket(b, ep("10.0.0.2:9"), lambda data, src, s: got.append((sched.now, data)))
    return sched, UdpSocket(a, ep("10.0.0.1:0")), got


def test_latency_and_bandwidth() -> None:
    # 1 Mbit/s, 10 ms: a 1000-byte payload is 1028 bytes of IPv4+UDP = 8.224 ms on the wire
    sched, sock, got = _pair(LinkParams(latency=0.010, bandwidth=1_000_000))
    for _ in range(3):
        sock.sendto(b"x" * 1000, ep("10.0.0.2:9"))
    sched.run()
    wire = 1028 * 8 / 1_000_000
    assert [t for t, _ in got] == pytest.approx([wire + 0.010, 2 * wire + 0.010, 3 * wire + 0.010])


def test_a_full_queue_drops() -> None:
    sched, sock, got = _pair(LinkParams(bandwidth=80_000, queue_delay=0.05))  # 10 kB/s, 50 ms of queue
    for _ in range(20):
        sock.sendto(b"x" * 972, ep("10.0.0.2:9"))  # 1000 bytes each: 100 ms per packet
    sched.run()
    assert len(got) == 1
    assert sock.machine.counters["link-queue-full"] == 19


def test_loss_is_seeded() -> None:
    def run(seed: int) -> list[bytes]:
        sched, sock, got = _pair(LinkParams(loss=0.3), seed)
        for i in range(200):
            sock.sendto(str(i).encode(), ep("10.0.0.2:9"))
        sched.run()
        return [d for _, d in got]

    first = run(1)
    assert 100 < len(first) < 180
    assert run(1) == first and run(2) != first


def test_jitter_never_reorders() -> None:
    sched, sock, got = _pair(LinkParams(latency=0.01, jitter=0.05))
    for i in range(50):
        sched.call_at(i * 0.001, sock.sendto, str(i).encode(), ep("10.0.0.2:9"))
    sched.run()
    assert [int(d) for _, d in got] == list(range(50))
    times = [t for t, _ in got]
    assert times == sorted(times) and max(times) > 0.03


def test_link_counts() -> None:
    link = Link(LinkParams(), Scheduler().rng_for("x"))
    assert link.transmit(100, 1.0) == 1.0
    assert link.counters["sent"] == 1 and link.counters["bytes"] == 100
