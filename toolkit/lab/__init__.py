"""Lab networks: one topology, three backends (sim, netns, docker) (design.md §1, issue 5).

:mod:`toolkit.lab.nat` holds NAT behaviour as data (RFC 4787) and the named presets;
:mod:`toolkit.lab.topology` the declarative topology; the backends realise it.
"""
