"""sans-IO protocol state machines; no asyncio/socket/time/random imports, time and randomness are passed in.

design.md §2: the cores take ``now`` and an rng (or key material) from their driver, consume bytes
and produce bytes, events and timer deadlines. They never block, sleep or touch a socket, so the
``sim`` backend and the tests drive them deterministically.
"""
