"""The simulator's TCP as data (RFC 9293 §3.3.2): constants, connection states and the transition table.

:class:`State` and :data:`TRANSITIONS` are the connection machine of :class:`~toolkit.lab.sim.tcpconn.TcpConnection`
(LISTEN lives in :class:`~toolkit.lab.sim.tcp.TcpListener`). The constants are the sim's fixed choices
(:mod:`toolkit.lab.sim.tcp` explains them): the initial retransmission timeout :data:`RTO` (RFC 6298, no
RTT estimation), :data:`MAX_RETRIES` timeouts before giving up, the fixed receive :data:`WINDOW`, a
shortened :data:`TIME_WAIT` (2 MSL) and the :data:`MSS` per IP version for the lab's 1500-byte MTU.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.lab.sim.tcpconn import TcpConnection

RTO = 0.2  # seconds, virtual; doubled on every timeout in a row
MAX_RETRIES = 8  # timeouts in a row before the connection gives up (0.2 * (2**8 - 1) = 51 s)
WINDOW = 65535  # the fixed receive window every connection advertises
TIME_WAIT = 1.0  # seconds, virtual (2 MSL shortened)
MSS = {4: 1460, 6: 1440}
SEQ_MOD = 1 << 32  # sequence numbers are 32-bit (RFC 9293 §3.4)


class State(Enum):
    """RFC 9293 §3.3.2 connection states (LISTEN lives in :class:`TcpListener`)."""

    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


_S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (_S.SYN_SENT, "rcv SYN,ACK"): _S.ESTABLISHED,
    (_S.SYN_RECEIVED, "rcv ACK"): _S.ESTABLISHED,
    (_S.ESTABLISHED, "close"): _S.FIN_WAIT_1,
    (_S.ESTABLISHED, "rcv FIN"): _S.CLOSE_WAIT,
    (_S.FIN_WAIT_1, "rcv ACK of FIN"): _S.FIN_WAIT_2,
    (_S.FIN_WAIT_1, "rcv FIN"): _S.CLOSING,
    (_S.FIN_WAIT_2, "rcv FIN"): _S.TIME_WAIT,
    (_S.CLOSING, "rcv ACK of FIN"): _S.TIME_WAIT,
    (_S.CLOSE_WAIT, "close"): _S.LAST_ACK,
    (_S.LAST_ACK, "rcv ACK of FIN"): _S.CLOSED,
    (_S.TIME_WAIT, "2MSL timeout"): _S.CLOSED,
    **{(s, "rcv RST"): _S.CLOSED for s in State if s is not _S.CLOSED},
    **{(s, "abort"): _S.CLOSED for s in State if s is not _S.CLOSED},
    **{(s, "give up"): _S.CLOSED for s in State if s is not _S.CLOSED},
}
ConnectedHandler = Callable[["TcpConnection"], None]


def noop(*_: object) -> None:
    """The default of every callback."""
    return None


__all__ = [
    "MAX_RETRIES",
    "MSS",
    "RTO",
    "SEQ_MOD",
    "TIME_WAIT",
    "TRANSITIONS",
    "WINDOW",
    "ConnectedHandler",
    "State",
    "noop",
]
