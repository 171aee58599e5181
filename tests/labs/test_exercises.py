"""Every graded exercise (labs/exercises/NN-name.ipynb) runs twice on sim, each in a fresh Jupyter kernel:

* with the reference solution (labs/exercises/solutions/NN-name.py: one ``# %% GRADE_ID`` section per task
  cell) in place of the task cells: every cell runs, every check passes;
* untouched, as a student gets it: every check cell fails with an AssertionError carrying the helpful message
  below, and no other cell fails (the setup and the teardown work without the student's code).

The notebooks are stored without outputs and carry nbgrader metadata (schema 3): task cells are solution
cells, check cells are graded, locked cells are read-only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from toolkit.codec import stun
from toolkit.lab import grading
from toolkit.lab.registry import load_topology, open_lab
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.types import Endpoint, TxID

ROOT = Path(__file__).resolve().parents[2]
EXERCISES = ROOT / "labs" / "exercises"
SECTION = re.compile(r"^# %% (\S+)\n", re.M)

# what the check cells of the untouched exercises say (grade_id -> a part of the message)
UNTOUCHED = {
    "01-public-endpoint": {"01-check-endpoint": "your probe never left alice: did you send a STUN Binding request"},
    "02-classify-nat": {"02-check-classification": "no STUN request crossed r1: run the RFC 5780 tests"},
    "03-hole-punch": {"03-check-punched": "bob never sent anything to alice's public address"},
    "04-broken-router": {"04-check-direct": "alice and bob still end on derp (StayOnDERP"},
    "05-why-relayed": {
        "05-check-hard-side": "no RFC 5780 test crossed r1",
        "05-check-direct": "alice and bob still end on derp (StayOnDERP",
    },
}


def exercises() -> list[str]:
    return sorted(p.stem for p in EXERCISES.glob("[0-9][0-9]-*.ipynb"))


def nbgrader(cell: Any) -> dict[str, Any]:
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def solutions(stem: str) -> dict[str, str]:
    """grade_id -> source of the reference solution's sections."""
    text = (EXERCISES / "solutions" / f"{stem}.py").read_text(encoding="utf-8")
    parts = SECTION.split(text)
    return {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}


def execute(nb: Any) -> Any:
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(EXERCISES)}}
    )
    client.execute()
    return nb


def errors(cell: Any) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def test_there_are_five_exercises_each_with_a_solution() -> None:
    names = exercises()
    assert names == sorted(UNTOUCHED), names
    for stem in names:
        nb = nbformat.read(EXERCISES / f"{stem}.ipynb", as_version=4)
        nbformat.validate(nb)
        tasks = [nbgrader(c)["grade_id"] for c in nb.cells if nbgrader(c).get("solution")]
        checks = [nbgrader(c)["grade_id"] for c in nb.cells if nbgrader(c).get("grade")]
        assert tasks and sorted(solutions(stem)) == sorted(tasks), (stem, tasks)
        assert sorted(checks) == sorted(UNTOUCHED[stem]), (stem, checks)
        for cell in nb.cells:
            meta = nbgrader(cell)
            assert meta.get("schema_version") == 3 and meta.get("grade_id"), (stem, cell.source[:60])
            assert meta["locked"] is not meta["solution"], (stem, meta)  # task cells editable, the rest locked
            if meta["grade"]:
                assert meta["points"] > 0 and cell.cell_type == "code" and not meta["solution"]
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{stem}: stored with outputs"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert params and 'BACKEND = "sim"' in params[0].source, stem


@pytest.mark.parametrize("stem", sorted(UNTOUCHED))
def test_with_the_solution_every_check_passes(stem: str) -> None:
    nb = nbformat.read(EXERCISES / f"{stem}.ipynb", as_version=4)
    solved = solutions(stem)
    for cell in nb.cells:
        gid = nbgrader(cell).get("grade_id")
        if nbgrader(cell).get("solution"):
            cell.source = solved[gid]
    execute(nb)
    failed = {nbgrader(c).get("grade_id"): errors(c) for c in nb.cells if errors(c)}
    assert failed == {}, failed
    for cell in nb.cells:
        if nbgrader(cell).get("grade"):
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            assert text.startswith("✓"), (nbgrader(cell)["grade_id"], text)


@pytest.mark.parametrize("stem", sorted(UNTOUCHED))
def test_untouched_the_checks_fail_with_a_helpful_message(stem: str) -> None:
    nb = execute(nbformat.read(EXERCISES / f"{stem}.ipynb", as_version=4))
    got = {nbgrader(c).get("grade_id"): errors(c) for c in nb.cells if errors(c)}
    assert sorted(got) == sorted(UNTOUCHED[stem]), got  # only the check cells fail
    for gid, expected in UNTOUCHED[stem].items():
        assert len(got[gid]) == 1 and got[gid][0].startswith("AssertionError: "), got[gid]
        assert expected in got[gid][0], got[gid]


# --- the checks' other verdicts, in-process (no kernel): each grades what happened on the sim's network -----


def _stun_from(lab: Any, host: str, dest: Any = None) -> Any:
    """A Binding request from a fresh socket on ``host``; (socket, mapped endpoint of the answer)."""
    sock = UdpSocket(lab.world.machine(host))
    sock.sendto(stun.binding_request(TxID(bytes(range(12)))), dest or grading.STUN_SERVER)
    return sock


def test_public_endpoint_check_rejects_the_private_address_and_a_wrong_port() -> None:
    async def run() -> None:
        async with open_lab(EXERCISES / "01-public-endpoint.yaml", "sim", seed=1) as lab:
            caps = {"host_capture": await lab.open_capture("alice", "eth0"),
                    "wan_capture": await lab.open_capture("r1", "wan")}  # fmt: skip
            sock = _stun_from(lab, "alice")
            await lab.sleep(0.5)
            public = stun.decode(sock.recv()[0]).mapped_endpoint
            with pytest.raises(AssertionError, match=re.escape("is alice's own (private) address")):
                await grading.check_public_endpoint(lab, str(sock.local).replace("0.0.0.0", "192.168.1.10"), **caps)
            with pytest.raises(AssertionError, match=re.escape("r1 maps none of alice's sockets to 203.0.113.1:1")):
                await grading.check_public_endpoint(lab, "203.0.113.1:1", **caps)
            with pytest.raises(AssertionError, match="is not an ip:port"):
                await grading.check_public_endpoint(lab, "my public endpoint", **caps)
            assert (await grading.check_public_endpoint(lab, str(public), **caps)).startswith("✓")

    asyncio.run(run())


def test_classification_check_wants_the_tests_and_the_right_words() -> None:
    async def run() -> None:
        async with open_lab(grading.mystery_topology(5), "sim", seed=1) as lab:  # seed 5: the hard preset
            wan = await lab.open_capture("r1", "wan")
            sock = _stun_from(lab, "alice")  # test I only: no CHANGE-REQUEST crossed r1 yet
            await lab.sleep(0.5)
            sock.close()
            with pytest.raises(AssertionError, match="no filtering test crossed r1"):
                grading.check_nat_classification(lab, {}, wan_capture=wan)
            await lab.run("alice", ["natkit", "nat-type", str(grading.STUN_SERVER)])
            answer = {"mapping": "endpoint-independent", "filtering": "address and port dependent"}
            with pytest.raises(AssertionError, match="your mapping answer 'endpoint-independent' is not what r1 does"):
                grading.check_nat_classification(lab, answer, wan_capture=wan)
            with pytest.raises(AssertionError, match="is not an RFC 4787 filtering behaviour"):
                grading.check_nat_classification(lab, {**answer, "filtering": "strict"}, wan_capture=wan)
            right = {**answer, "mapping": "Address-And-Port-Dependent"}
            assert grading.check_nat_classification(lab, right, wan_capture=wan).startswith("✓")

    asyncio.run(run())


def test_hole_punch_check_names_the_router_that_filtered() -> None:
    async def run() -> None:
        async with open_lab(EXERCISES / "03-hole-punch.yaml", "sim", seed=1) as lab:
            caps = {n: await lab.open_capture(n, "eth0") for n in ("alice", "bob")}
            caps |= {r: await lab.open_capture(r, "wan") for r in ("r1", "r2")}
            bob = UdpSocket(lab.world.machine("bob"), Endpoint.parse("0.0.0.0:41641"))
            for _ in range(3):  # only bob probes: alice never opened r1's filter for him
                bob.sendto(b"probe", Endpoint.parse("203.0.113.1:41641"))
                await lab.sleep(0.1)
            with pytest.raises(AssertionError, match=r"reached r1's WAN side .* but r1 let none through to alice"):
                grading.check_hole_punched(lab, caps)

    asyncio.run(run())


def test_topology_checks_keep_the_other_side_and_the_lesson() -> None:
    original = load_topology("easy-hard")

    def changed(router: str, **fields: Any) -> Any:
        rs = tuple(
            dataclasses.replace(r, nat=r.nat.replace(**fields)) if r.name == router else r for r in original.routers
        )
        return dataclasses.replace(original, routers=rs)

    with pytest.raises(AssertionError, match="r2 is not yours to change"):
        grading.check_only_changed(changed("r2", mapping="endpoint-independent"), original, routers=("r1",))
    with pytest.raises(AssertionError, match="you changed filtering of r1's NAT: the fix needs only wan_input"):
        grading.check_only_changed(changed("r1", filtering="address-dependent"), original, routers=("r1",),
                                   fields=("wan_input",))  # fmt: skip
    with pytest.raises(AssertionError, match="must be a Topology"):
        grading.check_only_changed(original.to_yaml(), original, routers=("r1",))
    assert grading.check_only_changed(changed("r1", one_to_one=True), original, routers=("r1",)) is not None
