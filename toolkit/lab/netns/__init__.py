"""The ``netns`` lab backend: Linux network namespaces, veth pairs, bridges, nftables NAT (design.md §1, §5).

:mod:`.plumbing` builds the namespaces, :mod:`.nftables` turns NAT behaviour into rulesets,
:mod:`.state` records what exists so ``down`` works from any process, :mod:`.lab` is the backend.
"""

from toolkit.lab.netns.lab import NetnsLab

__all__ = ["NetnsLab"]
