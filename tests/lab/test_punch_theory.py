"""The theory table of hole punching by hand (toolkit/lab/punch.py): anchors, invariants, the README grid."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.lab.nat import PRESETS, PortAllocation, preset
from toolkit.lab.punch import decode_probe, encode_probe, grid_markdown, predict, prediction_table
from toolkit.types import Endpoint

NAMES = list(PRESETS)
README = Path(__file__).resolve().parents[2] / "labs" / "README.md"


def direct(a: str, b: str) -> bool:
    return predict(preset(a), preset(b)).direct


def test_anchors_of_protocols_6_2() -> None:
    assert direct("easy", "easy")
    assert direct("easyaf", "hard") and direct("hard", "easyaf")
    assert not direct("hard", "hard")
    assert not direct("easy", "hard") and not direct("hard", "easy")
    for other in NAMES:
        if other != "udp-blocked":
            assert direct("one2one", other) and direct(other, "one2one"), other


def test_public_hosts_and_udp_blocked() -> None:
    assert predict(None, None).direct
    assert predict(None, preset("hard")).direct  # a public host answers wherever the probe came from
    for other in NAMES:
        for a, b in ((preset("udp-blocked"), preset(other)), (preset(other), preset("udp-blocked"))):
            p = predict(a, b)
            assert not p.direct and "never leaves" in p.why


def test_broken_router_depends_on_who_starts() -> None:
    broken = preset("broken-router")
    assert not predict(broken, broken).direct
    assert predict(preset("easy"), preset("easy")).direct  # broken-router-fixed
    late = predict(preset("easy"), broken)  # easy starts first: its probe lands on bob's router first
    assert not late.direct and "conntrack tuple" in late.why
    assert predict(broken, preset("easy")).direct


def test_order_matters_only_with_a_router_that_accepts_wan_input() -> None:
    table = prediction_table()
    for x, y in itertools.combinations(NAMES, 2):
        if "broken-router" not in (x, y):
            assert table[x, y].direct == table[y, x].direct, (x, y)
    assert any(table[x, y].direct != table[y, x].direct for x, y in itertools.combinations(NAMES, 2))


def test_every_pair_has_its_reasoning() -> None:
    for (x, y), p in prediction_table().items():
        assert p.why.startswith("direct: " if p.direct else "not direct: "), (x, y)
        assert p.steps[0].startswith(f"alice is behind {x}"), p.steps
        assert (p.via[0] is not None and p.via[1] is not None) == p.direct
        if x == "hard" and y in ("easy", "hard"):
            assert "new public port" in " ".join(p.steps)


fields = st.fixed_dictionaries(
    {
        "allocation": st.sampled_from(list(PortAllocation)),
        "hairpinning": st.booleans(),
        "mapping_timeout": st.floats(min_value=5.0, max_value=3600.0),
    }
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NAMES), st.sampled_from(NAMES), fields, fields)
def test_allocation_hairpinning_and_timeout_change_nothing(a: str, b: str, fa: dict, fb: dict) -> None:
    assert predict(preset(a).replace(**fa), preset(b).replace(**fb)).direct == direct(a, b)


@given(st.text(min_size=1, max_size=40), st.integers(0, 2**32 - 1), st.integers(1, 65535))
def test_probe_round_trip(sender: str, seq: int, port: int) -> None:
    target = Endpoint.parse(f"203.0.113.9:{port}")
    data = encode_probe(sender, seq, target)
    assert decode_probe(data) == (sender.encode().decode(errors="replace"), seq, str(target))


def test_scapy_probe_is_the_same_bytes() -> None:
    from toolkit.packets.punchprobe import PunchProbe, craft, dissect

    target = Endpoint.parse("203.0.113.2:41641")
    assert craft("ha1:40003", 7, target) == encode_probe("ha1:40003", 7, target)
    got = dissect(encode_probe("hb0:40001", 19, target))
    assert isinstance(got, PunchProbe) and got.seq == 19 and got.sender == b"hb0:40001"
    assert got.target == b"203.0.113.2:41641"
    assert dissect(b"\x00\x01 not a probe") is None


def test_readme_has_the_generated_grid() -> None:
    assert grid_markdown() in README.read_text(), (
        "regenerate with: python -c 'from toolkit.lab.punch import *; print(grid_markdown())'"
    )
