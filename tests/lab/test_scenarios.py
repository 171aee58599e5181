"""labs/*.yaml: every scenario loads, validates and round-trips, has the servers every lab has and places
alice and bob as its name says; labs/README.md lists them; the registry finds scenarios and backends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit.errors import UsageError
from toolkit.lab import registry
from toolkit.lab.labservices import derp_map, hosts_running
from toolkit.lab.topology import Topology

LABS = Path(__file__).resolve().parents[2] / "labs"
REQUIRED = ["easy-easy", "easy-hard", "hard-hard", "public-public", "same-lan", "cgnat", "udp-blocked", "broken-router"]
FILES = sorted(LABS.glob("*.yaml"))

# scenario -> (NAT preset per router on alice's path to the internet, the same for bob, expect)
PLACEMENT = {
    "easy-easy": (["easy"], ["easy"], "direct"),
    "easy-hard": (["easy"], ["hard"], "relayed"),
    "easyaf-hard": (["easyaf"], ["hard"], "direct"),
    "hard-hard": (["hard"], ["hard"], "relayed"),
    "public-public": ([], [], "direct"),
    "same-lan": (["easy"], ["easy"], "local"),
    "cgnat": (["easy", "easy"], ["easy"], "direct"),
    "udp-blocked": (["udp-blocked"], ["easy"], "relayed"),
    "broken-router": (["broken-router"], ["broken-router"], "relayed"),
    "broken-router-fixed": (["easy"], ["easy"], "direct"),
    "dual-stack": (["easy"], ["easy"], "direct"),
}


def test_every_required_scenario_exists() -> None:
    names = [p.stem for p in FILES]
    assert set(REQUIRED) <= set(names)
    assert sorted(names) == sorted(PLACEMENT), "a new scenario needs a PLACEMENT entry"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_scenario_loads_validates_and_round_trips(path: Path) -> None:
    topo = Topology.from_yaml(path)
    assert topo.name == path.stem and topo.description
    assert Topology.from_yaml(str(path)) == topo  # a one-line str naming a file
    d = topo.to_dict()
    assert Topology.from_dict(d) == topo and Topology.from_dict(d).to_dict() == d
    text = topo.to_yaml()
    assert Topology.from_yaml(text) == topo and Topology.from_yaml(text).to_yaml() == text


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_scenario_has_the_lab_servers_and_two_nodes(path: Path) -> None:
    topo = Topology.from_yaml(path)
    (stun,) = hosts_running(topo, "stun-server")
    assert stun.segment == "internet" and len(stun.extra_v4) == 1  # two addresses: RFC 5780
    (derp,) = hosts_running(topo, "derp-server")
    (control,) = hosts_running(topo, "control-server")
    assert {derp.segment, control.segment} == {"internet"}
    assert [h.name for h in topo.nodes()] == ["alice", "bob"]
    region = derp_map(topo).regions[1]
    assert [n.host_name for n in region.nodes] == [derp.name, stun.name]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_scenario_places_alice_and_bob(path: Path) -> None:
    topo = Topology.from_yaml(path)
    alice_nats, bob_nats, expect = PLACEMENT[path.stem]
    assert [r.nat.name for r in topo.path_to_internet("alice") if r.nat] == alice_nats
    assert [r.nat.name for r in topo.path_to_internet("bob") if r.nat] == bob_nats
    assert topo.expect == expect
    same_lan = topo.host("alice").segment == topo.host("bob").segment
    assert same_lan == (path.stem in ("same-lan", "public-public"))


def test_readme_lists_every_scenario_and_its_example_is_valid() -> None:
    readme = (LABS / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \|.*\| (direct|local|relayed) \|", readme, re.M))
    expected = {p.stem: Topology.from_yaml(p).expect for p in FILES}
    assert rows == expected
    (example,) = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    topo = Topology.from_yaml(example)
    assert [r.nat is None for r in topo.routers] == [False, False, True]


# --- registry ----------------------------------------------------------------------------------------


def test_list_scenarios() -> None:
    found = registry.list_scenarios()
    assert [s.name for s in found] == sorted(p.stem for p in FILES)
    _name, path, description = found[0]
    assert path.is_file() and description == Topology.from_yaml(path).description


def test_scenario_lookup(tmp_path: Path) -> None:
    assert registry.scenario_path("easy-easy") == LABS / "easy-easy.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text((LABS / "same-lan.yaml").read_text())
    assert registry.scenario_path(own) == own and registry.load_topology(str(own)).name == "same-lan"
    with pytest.raises(UsageError, match="no lab scenario 'easy-medium'; scenarios: broken-router, "):
        registry.scenario_path("easy-medium")
    with pytest.raises(UsageError, match=r"lab file .*nothere\.yaml does not exist"):
        registry.scenario_path(tmp_path / "nothere.yaml")
    topo = registry.load_topology("cgnat")
    assert registry.load_topology(topo) is topo


def test_labs_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "solo.yaml").write_text("name: solo\ndescription: just one\nhosts: [{name: a}]\n")
    monkeypatch.setenv("NATKIT_LABS", str(tmp_path))
    assert registry.list_scenarios() == [registry.Scenario("solo", tmp_path / "solo.yaml", "just one")]


def test_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="unknown lab backend 'vm'; backends: sim, netns, docker"):
        registry.backend_class("vm")
    monkeypatch.setitem(registry.BACKENDS, "docker", "toolkit.lab.no_such_backend:DockerLab")
    with pytest.raises(UsageError, match=r"backend 'docker' is not available: No module named 'toolkit\.lab\.no_such"):
        registry.open_lab("easy-easy", backend="docker")
    monkeypatch.setitem(registry.BACKENDS, "docker", "toolkit.lab.topology:Nothing")
    with pytest.raises(UsageError, match=r"backend 'docker' is not available: toolkit\.lab\.topology has no Lab class"):
        registry.backend_class("docker")


def test_state_names_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATKIT_LAB_STATE", str(tmp_path))
    assert registry.state_dir("easy-easy") == tmp_path / "easy-easy"
    with pytest.raises(UsageError, match=r"lab name '\.\./etc'"):
        registry.state_dir("../etc")
    assert registry.list_states() == []
    with pytest.raises(UsageError, match=r"no lab named 'gone' is up \(labs up: none\)"):
        registry.attach("gone")
