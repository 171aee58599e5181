"""toolkit.lab.nat: the presets say what their names promise (RFC 4787, RFC 3489, Tailscale vnet), and
NatBehavior's dict form and validation."""

from __future__ import annotations

import pytest

from toolkit.errors import UsageError
from toolkit.lab.nat import PRESETS, Filtering, Mapping, NatBehavior, PortAllocation, WanInput, preset

EIM, ADM, APDM = Mapping.ENDPOINT_INDEPENDENT, Mapping.ADDRESS_DEPENDENT, Mapping.ADDRESS_AND_PORT_DEPENDENT
EIF, ADF, APDF = Filtering.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT

# name -> (mapping, filtering, hard?) as protocols.md §6.2 (vnet) and RFC 3489 §5 define them
EXPECTED = {
    "one2one": (EIM, EIF, False),
    "easy": (EIM, APDF, False),
    "easyaf": (EIM, ADF, False),
    "hard": (APDM, APDF, True),
    "full-cone": (EIM, EIF, False),
    "restricted-cone": (EIM, ADF, False),
    "port-restricted-cone": (EIM, APDF, False),
    "symmetric": (APDM, APDF, True),
    "symmetric-preserving": (APDM, APDF, True),
    "symmetric-sequential": (APDM, APDF, True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_mapping_and_filtering(name: str) -> None:
    nat = preset(name)
    assert (nat.mapping, nat.filtering, nat.is_hard) == EXPECTED[name]
    assert nat.name == name and nat.description
    assert not nat.block_udp


def test_special_presets() -> None:
    assert preset("udp-blocked").block_udp
    broken = preset("broken-router")
    assert broken.wan_input is WanInput.ACCEPT and broken.replace(wan_input="drop", name="easy", description="") == (
        preset("easy").replace(description="")
    )
    assert preset("one2one").one_to_one
    assert preset("hard").allocation is PortAllocation.RANDOM
    assert preset("symmetric-sequential").allocation is PortAllocation.SEQUENTIAL
    assert all(p.mapping_timeout >= 120 for p in PRESETS.values())  # RFC 4787 REQ-5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_form_round_trips(name: str) -> None:
    nat = PRESETS[name]
    again = NatBehavior.from_dict(nat.to_dict())
    assert again == nat.replace(description="")
    assert NatBehavior.from_dict({"preset": name}) == nat


def test_dict_form_and_validation_errors() -> None:
    assert NatBehavior.from_dict({"preset": "easy", "hairpinning": True}).hairpinning
    assert NatBehavior.from_dict({"mapping": "address-dependent"}).mapping is ADM
    with pytest.raises(UsageError, match="unknown NAT preset 'medium'; presets: one2one, easy"):
        preset("medium")
    with pytest.raises(UsageError, match="NAT 'x': filtering 'some' is not one of endpoint-independent"):
        NatBehavior("x", filtering="some")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="NAT 'x': wan_input 'maybe' is not drop or accept"):
        NatBehavior("x", wan_input="maybe")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="NAT 'x': mapping_timeout must be > 0 seconds"):
        NatBehavior("x", mapping_timeout=0)
    with pytest.raises(UsageError, match="NAT: unknown field"):
        NatBehavior.from_dict({"colour": "red"})
    with pytest.raises(UsageError, match="a NAT must be a preset name or a mapping"):
        NatBehavior.from_dict("easy")  # type: ignore[arg-type]
