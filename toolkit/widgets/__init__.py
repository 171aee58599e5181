"""ipywidgets views of a lab (issue 7): the flowchart live, the topology, packets, NAT tables.

The top layer beside the CLI (design.md §2): widgets read public trace records
(:class:`~toolkit.widgets.feed.TraceFeed`), the ``TRANSITIONS`` tables and the lab's topology, never a
core's private state; nothing imports ``toolkit.widgets``. ``import toolkit.widgets`` is cheap: the
names below are imported from their modules on first use (PEP 562), so ipywidgets and scapy load only
when a widget is made, and ``import toolkit`` never loads this package.

* :class:`FlowchartView` (:mod:`.flowchart`): the seed flowchart of one node's machine for one peer;
* :class:`TopologyView` (:mod:`.topology`): the lab's topology with each node's path to each peer;
* :class:`TraceFeed` (:mod:`.feed`): the records every widget reads (a tracer, a poller, JSON lines);
* :class:`PacketInspector` (:mod:`.packets`) and :class:`NatTableView` (:mod:`.nattable`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FlowchartView": "toolkit.widgets.flowchart",
    "LogEntry": "toolkit.widgets.flowchart",
    "dissect_record": "toolkit.widgets.flowchart",
    "TopologyView": "toolkit.widgets.topology",
    "TraceFeed": "toolkit.widgets.feed",
    "ThrottledRenderer": "toolkit.widgets.render",
    "render_svg": "toolkit.widgets.render",
    "PacketInspector": "toolkit.widgets.packets",
    "NatTableView": "toolkit.widgets.nattable",
    "Timeline": "toolkit.widgets.timeline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
