"""The graph of RFC 5780 NAT behaviour discovery: states, edge labels and the TRANSITIONS table.

:class:`toolkit.sansio.natbehavior.NatBehaviorDiscovery` walks this graph and takes no edge that is
not in :data:`TRANSITIONS`; widgets draw it and the tests walk every edge. A state is the test
running (RFC 5780 §4.3 mapping tests I-III, §4.4 filtering tests II-III, §4.5 hairpinning, §4.6
lifetime); an edge is labelled with what the test showed. Edges after the filtering and hairpinning
tests fan out: the next state is the next test the caller asked for (hairpinning, lifetime) or DONE.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    START = "start"
    TEST_I = "test I"
    MAPPING_II = "mapping test II"
    MAPPING_III = "mapping test III"
    FILTERING_II = "filtering test II"
    FILTERING_III = "filtering test III"
    HAIRPIN = "hairpinning"
    LIFETIME = "lifetime"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Edge:
    """One transition: from ``source`` on ``label`` to ``target``."""

    source: State
    label: str
    target: State


# edge labels
STARTED = "start"
NO_ANSWER = "no answer"
ERROR = "error response"
NOT_5780 = "no OTHER-ADDRESS"
NO_NAT = "mapped = local: no NAT"
BEHIND_NAT = "mapped != local: behind NAT"
SAME = "same mapping"
NEW = "new mapping"
ANSWERED = "answered from the address asked for"
WRONG_SOURCE = "answered from another address"
HAIRPINNED = "own request came back"
EXPIRED = "a binding expired"
OUTLIVED = "every binding outlived its wait"
NO_BINDING = "no binding answered"

S = State
_AFTER_FILTERING = (S.HAIRPIN, S.LIFETIME, S.DONE)
#: The discovery graph. Widgets draw it; tests walk it; the machine takes no edge that is not here.
TRANSITIONS: tuple[Edge, ...] = (
    Edge(S.START, STARTED, S.TEST_I),
    Edge(S.TEST_I, NO_ANSWER, S.DONE),
    Edge(S.TEST_I, ERROR, S.DONE),
    Edge(S.TEST_I, NOT_5780, S.HAIRPIN),
    Edge(S.TEST_I, NOT_5780, S.DONE),
    Edge(S.TEST_I, NO_NAT, S.FILTERING_II),
    Edge(S.TEST_I, BEHIND_NAT, S.MAPPING_II),
    Edge(S.MAPPING_II, SAME, S.FILTERING_II),
    Edge(S.MAPPING_II, NEW, S.MAPPING_III),
    Edge(S.MAPPING_II, NO_ANSWER, S.FILTERING_II),
    Edge(S.MAPPING_II, ERROR, S.FILTERING_II),
    *(Edge(S.MAPPING_III, label, S.FILTERING_II) for label in (SAME, NEW, NO_ANSWER, ERROR)),
    Edge(S.FILTERING_II, NO_ANSWER, S.FILTERING_III),
    *(Edge(S.FILTERING_II, label, to) for label in (ANSWERED, WRONG_SOURCE, ERROR) for to in _AFTER_FILTERING),
    *(
        Edge(S.FILTERING_III, label, to)
        for label in (ANSWERED, NO_ANSWER, WRONG_SOURCE, ERROR)
        for to in _AFTER_FILTERING
    ),
    *(Edge(S.HAIRPIN, label, to) for label in (HAIRPINNED, NO_ANSWER) for to in (S.LIFETIME, S.DONE)),
    *(Edge(S.LIFETIME, label, S.DONE) for label in (EXPIRED, OUTLIVED, NO_BINDING, ERROR)),
)


# fmt: off
__all__ = [
    "ANSWERED", "BEHIND_NAT", "ERROR", "EXPIRED", "HAIRPINNED", "NEW", "NOT_5780", "NO_ANSWER", "NO_BINDING",
    "NO_NAT", "OUTLIVED", "SAME", "STARTED", "WRONG_SOURCE", "Edge", "State", "TRANSITIONS",
]
# fmt: on
