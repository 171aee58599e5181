"""The ``docker`` backend: a lab as containers on Docker networks (issue 5, design.md §1 and §5).

:class:`DockerLab` renders the topology as a compose project (:mod:`toolkit.lab.docker.compose`), writes it
to the lab's state directory (``/run/natkit/labs/NAME/docker-compose.yml``) and starts it with compose
(Debian's ``docker-compose`` 1.29, or the ``docker compose`` plugin): the file a teacher hands out is the
file the tests run. Tear-down does not need that file: it removes the containers and networks labelled
``org.natkit.lab=NAME`` with the docker CLI, and nothing else (no images, no volumes), so ``down()`` also
cleans up after a crash or from another shell.

Engine: the one passed in, else one that answers, else natkit starts Debian's ``dockerd``
(:mod:`toolkit.lab.docker.engine`); an engine this lab started is stopped by ``down()`` once no natkit lab
containers remain. Images: :func:`toolkit.lab.docker.images.ensure_images`, offline (debootstrap base)
when ``offline=True``, ``$NATKIT_DOCKER_OFFLINE=1`` or no registry answers, else from ``python:3.11-slim``.

Per host: ``run`` is ``docker exec`` (under ``timeout -s KILL`` so a timeout also ends the process in
the container); a service is ``natkit KIND ARGS`` under ``docker exec`` whose shell prints its pid first,
so ``stop()`` can SIGTERM it inside the container; ``nat_table`` reads ``conntrack -L`` in the router
container; ``open_capture`` runs the host's ``tcpdump`` in the container's network namespace
(``nsenter``) and strips the Ethernet header (:mod:`toolkit.lab.docker.dockerexec`); ``spawn`` is ``docker exec
-i`` with pipes (the host agent of :mod:`toolkit.lab.hostio`; ``down()`` closes its stdin, and removing the
container ends it in any case).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path, PurePosixPath
from typing import ClassVar

from toolkit.errors import NatkitError
from toolkit.lab import labservices
from toolkit.lab.backend import Capture, ElementStatus, Lab, LabStatus, NatMapping, RunResult, ServiceHandle
from toolkit.lab.docker import compose
from toolkit.lab.docker import engine as engine_mod
from toolkit.lab.docker import images as image_mod
from toolkit.lab.docker.dockerexec import ExecService, TcpdumpCapture, exec_run, exec_spawn
from toolkit.lab.nat import Mapping
from toolkit.lab.nodes import ServiceNode, node_args
from toolkit.lab.topology import Host, Router, ServiceSpec, Topology
from toolkit.timing import DEFAULT, Timing

READY_TIMEOUT = 30.0
NETWORK_RM_TRIES = 20  # x 0.25 s: dockerd may still hold a removed container's endpoints


def _state_dir(name: str) -> Path:
    from toolkit.lab.registry import state_dir

    return state_dir(name)


def remove_lab(eng: engine_mod.Engine, name: str) -> None:
    """Remove every container and network labelled as lab ``name`` (also what a crashed lab left)."""
    label = f"label={compose.LABEL_LAB}={name}"
    ids = eng.docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        eng.docker("rm", "-f", "-v", *ids, timeout=120)
    nets = eng.docker("network", "ls", "-q", "--filter", label).stdout.split()
    for attempt in range(NETWORK_RM_TRIES):
        if not nets:
            break
        gone = eng.docker("network", "rm", *nets, check=attempt == NETWORK_RM_TRIES - 1)
        if gone.returncode == 0:
            break
        # dockerd releases a removed container's endpoints asynchronously ("network ... has active
        # endpoints" right after `rm -f`): detach what is left by force, wait, try again
        for net in nets:
            attached = eng.docker("network", "inspect", "--format", "{{range $k, $v := .Containers}}{{$v.Name}} {{end}}",
                                  net, check=False).stdout.split()  # fmt: skip
            for endpoint in attached:
                eng.docker("network", "disconnect", "-f", net, endpoint, check=False)
        time.sleep(0.25)
        nets = eng.docker("network", "ls", "-q", "--filter", label).stdout.split()


class DockerLab(Lab):
    """A lab on a Docker engine (see the module docstring)."""

    backend: ClassVar[str] = "docker"
    persistent: ClassVar[bool] = True

    def __init__(
        self,
        topology: Topology,
        *,
        name_prefix: str | None = None,
        seed: int = 0,
        timing: Timing = DEFAULT,
        engine: engine_mod.Engine | None = None,
        offline: bool | None = None,
        images: image_mod.Images | None = None,
    ) -> None:
        super().__init__(topology, name_prefix=name_prefix, seed=seed, timing=timing)
        self._engine = engine
        self._own_engine = False
        self.offline = offline  # None: decided at up() like the bench (NATKIT_DOCKER_OFFLINE, else a registry probe)
        self.project: compose.Project | None = None
        self.images: image_mod.Images | None = images
        self.services: list[ExecService] = []
        self.captures: list[TcpdumpCapture] = []

    # --- engine and names --------------------------------------------------------------------------

    @property
    def engine(self) -> engine_mod.Engine:
        if self._engine is None:
            found = engine_mod.find_engine()
            if found is None:
                found = engine_mod.start_engine()
                self._own_engine = True
            self._engine = found
        return self._engine

    def container(self, element: str) -> str:
        """The container name of host or router ``element``."""
        self.topology.element(element)
        return f"{self.name}-{element}"

    def compose_file(self) -> Path:
        return _state_dir(self.name) / "docker-compose.yml"

    def _compose_argv(self) -> list[str]:
        eng = self.engine
        if eng.compose is not None:
            return [eng.compose]
        plugin = eng.docker("compose", "version", check=False)
        if plugin.returncode == 0:
            return [eng.cli, "compose"]
        raise NatkitError("the docker backend needs compose: install the Debian package docker-compose")

    # --- lifecycle ---------------------------------------------------------------------------------

    async def up(self) -> None:
        eng = await asyncio.to_thread(lambda: self.engine)
        if self.images is None:
            if self.offline is None:
                from toolkit.lab.benchprep import docker_offline

                self.offline = (await asyncio.to_thread(docker_offline, eng))[0]
            self.images = await asyncio.to_thread(image_mod.ensure_images, eng, self.offline)
        self.project = compose.plan(self.topology, self.name, self.images.node, self.images.router)
        path = self.compose_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(compose.render(self.project))
        argv = [*self._compose_argv(), "-p", self.name, "-f", str(path), "up", "-d", "--no-build"]
        proc = await asyncio.to_thread(eng.run, argv, check=False, timeout=300)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise NatkitError(f"docker lab {self.name}: compose up failed: {' | '.join(tail)}")
        await asyncio.gather(*(self._wait_ready(c.name) for c in self.project.containers))
        for host in self.topology.hosts:
            for spec in host.services:
                await self.start_service(host.name, spec)

    async def _wait_ready(self, container: str) -> None:
        """Wait until natkit-entry has configured ``container``; its log in the error if it stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            probe = await exec_run(self.engine, container, ["test", "-e", "/run/natkit/ready"], timeout=10)
            if probe.exit == 0:
                return
            state = await asyncio.to_thread(
                self.engine.docker, "inspect", "--format", "{{.State.Running}}", container, check=False
            )
            if state.stdout.strip() == "false":
                logs = await asyncio.to_thread(self.engine.docker, "logs", "--tail", "5", container, check=False)
                detail = " | ".join((logs.stderr + logs.stdout).strip().splitlines()[-5:])
                raise NatkitError(f"docker lab {self.name}: container {container} stopped: {detail}")
            await asyncio.sleep(0.1)
        raise NatkitError(f"docker lab {self.name}: container {container} not ready after {READY_TIMEOUT:.0f}s")

    async def down(self) -> None:
        from toolkit.lab import hostio

        await hostio.shutdown(self)  # host agents: stdin closed, they exit (removing the containers would too)
        for svc in self.services:
            with contextlib.suppress(Exception):
                await svc.stop()
        self.services.clear()
        for cap in self.captures:
            with contextlib.suppress(Exception):
                await cap.aclose()
        self.captures.clear()
        if self._engine is None and engine_mod.find_engine() is None:
            return  # no engine: nothing of this lab can exist
        await asyncio.to_thread(self._remove)
        if self._own_engine and not await asyncio.to_thread(self._any_lab_left):
            await asyncio.to_thread(engine_mod.stop_engine, self.engine)
            self._engine, self._own_engine = None, False

    def _remove(self) -> None:
        remove_lab(self.engine, self.name)
        with contextlib.suppress(OSError):
            self.compose_file().unlink()
        with contextlib.suppress(OSError):
            self.compose_file().parent.rmdir()  # only when nothing else (lab.json of `natkit lab up`) is left

    def _any_lab_left(self) -> bool:
        return bool(self.engine.docker("ps", "-aq", "--filter", f"label={compose.LABEL_LAB}").stdout.split())

    def status(self) -> LabStatus:
        if self._engine is None and engine_mod.find_engine() is None:
            return LabStatus(self.name, self.backend, False)
        out = self.engine.docker(
            "ps", "-a", "--filter", f"label={compose.LABEL_LAB}={self.name}",
            "--format", '{{.Label "org.natkit.element"}} {{.State}} {{.ID}}',
        ).stdout  # fmt: skip
        state = {
            parts[0]: (parts[1], parts[2]) for parts in (line.split() for line in out.splitlines()) if len(parts) == 3
        }
        elements: list[ElementStatus] = []
        members: list[Router | Host] = [*self.topology.routers, *self.topology.hosts]
        for element in members:
            running, cid = state.get(element.name, ("missing", ""))
            addresses = tuple(f"{i.cidr} {i.name}" for i in self.topology.interfaces(element.name))
            services = tuple(f"{s.spec.kind} {', '.join(s.listening)}" for s in self.services if s.host == element.name)
            if not services and running == "running" and isinstance(element, Host) and element.services:
                services = self._running_elsewhere(element)
            kind = "host" if isinstance(element, Host) else "router"
            elements.append(ElementStatus(element.name, kind, running == "running", addresses, services, cid))
        up = bool(elements) and all(e.up for e in elements)
        return LabStatus(self.name, self.backend, up, tuple(elements))

    def _running_elsewhere(self, host: Host) -> tuple[str, ...]:
        """Services another process (``natkit lab up``) started on ``host``: its natkit processes, by command line."""
        out = self.engine.docker("exec", self.container(host.name), "ps", "-eo", "args").stdout
        found = []
        for spec in host.services:
            for line in out.splitlines():
                if f"natkit {spec.kind}" in line:
                    found.append(f"{spec.kind} running: {line.split(spec.kind, 1)[1].strip()}")
                    break
            else:
                found.append(f"{spec.kind} NOT running")
        return tuple(found)

    # --- per host / router -------------------------------------------------------------------------

    async def run(self, host: str, argv: Sequence[str], *, timeout: float = 30.0) -> RunResult:
        return await exec_run(self.engine, self.container(host), list(argv), timeout=timeout)

    async def spawn(self, host: str, argv: Sequence[str], *, what: str = "process") -> asyncio.subprocess.Process:
        """``docker exec -i CONTAINER ARGV`` with stdin/stdout/stderr pipes (:func:`exec_spawn`)."""
        return await exec_spawn(self.engine, self.container(host), list(argv))

    async def start_service(self, host: str, spec: ServiceSpec) -> ServiceHandle:
        h = self._host(host)
        argv = ["natkit", *labservices.service_argv(h, spec)]
        if spec.kind == "control-server":
            derp = labservices.derp_map(self.topology).to_json()
            await exec_run(self.engine, self.container(host), ["sh", "-c", "cat > /run/natkit/derpmap.json"],
                           input=derp)  # fmt: skip
            argv += ["--db", "/run/natkit/control.db", "--derp-map", "/run/natkit/derpmap.json"]
        svc = ExecService(self.engine, self.container(host), host, spec, argv)
        await svc.start()
        self.services.append(svc)
        return svc

    async def start_node(self, host: str, *, timing_scale: float = 1.0) -> ServiceNode:
        """``natkit node`` in ``host``'s container (``docker exec``), its files in ``/var/lib/natkit/HOST``."""
        files = PurePosixPath("/var/lib/natkit") / self._host(host).name
        (await self.run(host, ["sh", "-c", f"rm -rf {files} && mkdir -p {files}"])).check(f"mkdir on {host}")
        args = node_args(self.topology, host, files, timing_scale=timing_scale)
        service = await self.start_service(host, ServiceSpec("node", tuple(args)))
        node = self.nodes[host] = ServiceNode(self, host, service, files, ["natkit"])
        return node

    async def open_capture(self, element: str, interface: str) -> Capture:
        self.topology.interface(element, interface)  # UsageError for an unknown element or interface
        cap = TcpdumpCapture(self.engine, self.container(element), element, interface)
        await cap.start()
        self.captures.append(cap)
        return cap

    async def nat_table(self, router: str) -> list[NatMapping]:
        """The router's conntrack table read as on netns (:mod:`toolkit.lab.netns.conntrack`): the same NAT
        gives the same table on both kernel backends."""
        from toolkit.lab.netns import conntrack

        r = self._nat_router(router)
        assert r.nat is not None
        result = await exec_run(self.engine, self.container(router), ["conntrack", "-L"], timeout=10)
        result.check(f"conntrack -L on {router}")
        per_destination = r.nat.mapping is not Mapping.ENDPOINT_INDEPENDENT
        return conntrack.mappings(conntrack.parse(result.stdout), per_destination=per_destination)

    async def logs(self, host: str) -> AsyncIterator[str]:
        self._host(host)
        seen: dict[int, int] = {}
        while True:
            for svc in [s for s in self.services if s.host == host]:
                lines = svc.logs()
                for line in lines[seen.get(id(svc), 0) :]:
                    yield line
                seen[id(svc)] = len(lines)
            await asyncio.sleep(0.1)

    def describe(self) -> str:
        """One line: the engine and images this lab uses."""
        eng = self._engine
        where = f"{eng.host} (docker {eng.version})" if eng else "no engine yet"
        imgs = f"{self.images.node}, {self.images.router}" if self.images else "images not built"
        return f"docker lab {self.name} on {where}: {imgs}; compose file {shlex.quote(str(self.compose_file()))}"


__all__ = ["DockerLab", "remove_lab"]
