"""Semantic checks over the whole set of converted stacks: what a schema cannot say.

Each check is a small named function ``(stacks, host) -> list[Problem]`` listed in ``CHECKS``; they run
in order and ALL run (no check stops the others), so a user sees every problem at once. A problem points
at the node that declared the offending item, via ``Converted.origins`` and the document's marks.

The checks: unique stack names across files; service names that collide with replica names; unknown or
cyclic dependencies (the cycle is named ``a -> b -> a``) and ``healthy`` on a service without a
healthcheck; references to undeclared volumes, networks, configs, secrets and ``container:`` services;
mount sanity (sources, targets, duplicates); host port conflicts across ALL stacks; cpusets (syntax and
CPUs this host has); limits in range (memory >= 4Mi, 0 < cpus <= host CPUs, reservation <= memory,
swap >= memory, soft <= hard ulimits); sysctls a container may set (``orchestrator.policy``: namespaced
ones only, with the service's own namespace); secret env names; config and secret files that do not exist.

Neighbours: input from ``manifest.convert`` (models plus origins); run by ``manifest.load``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import Problem
from orchestrator.manifest import units
from orchestrator.manifest.convert import Converted
from orchestrator.manifest.loader import PathKey
from orchestrator.policy import sysctl_refusal

MIN_MEMORY = 4 * 1024 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Host:
    """What the checks need to know about the machine (injected, so tests pick their own)."""

    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)


Check = Callable[[Sequence[Converted], Host], list[Problem]]


def _svc(name: str, *rest: str | int) -> PathKey:
    return ("spec", "services", name, *rest)


def _hint(word: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unique_stack_names(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    first: dict[str, Converted] = {}
    out = []
    for c in stacks:
        name = c.stack.name
        if name in first:
            out.append(c.problem(("metadata", "name"), f'stack "{name}" is already defined at '
                                 f"{first[name].stack.source}"))
        else:
            first[name] = c
    return out


def replica_name_collisions(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    """A service ``db-2`` and replica 2 of ``db`` would share a DNS and container name."""
    out = []
    for c in stacks:
        by_name = {s.name: s for s in c.stack.services}
        for s in c.stack.services:
            base, _, num = s.name.rpartition("-")
            if num.isdigit() and base in by_name and 1 <= int(num) <= by_name[base].replicas:
                out.append(c.problem(_svc(s.name), f'service name "{s.name}" collides with replica '
                                     f'{int(num)} of service "{base}"', key=True))
    return out


def dependencies(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        by_name = {s.name: s for s in c.stack.services}
        for s in c.stack.services:
            for d in s.depends_on:
                where = c.at(("dep", s.name, d.service), _svc(s.name, "dependsOn"))
                if d.service == s.name:
                    out.append(c.problem(where, f'service "{s.name}" depends on itself'))
                elif d.service not in by_name:
                    out.append(c.problem(where, f'unknown service "{d.service}"'
                                         f"{_hint(d.service, list(by_name))}"))
                elif d.condition == "healthy" and by_name[d.service].healthcheck is None:
                    out.append(c.problem(where, f'condition healthy needs a healthcheck on service '
                                         f'"{d.service}"'))
        out.extend(_cycles(c))
    return out


def _cycles(c: Converted) -> list[Problem]:
    """Every back edge of a depth-first walk closes a cycle; each cycle is reported once, at that edge.

    Iterative, not recursive: a chain of a thousand services must not hit Python's recursion limit.
    """
    graph = {s.name: [d.service for d in s.depends_on if d.service != s.name] for s in c.stack.services}
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    reported: set[frozenset[str]] = set()
    out: list[Problem] = []
    for root in sorted(graph):
        if root in state:
            continue
        trail: list[str] = [root]
        stack: list[Iterator[str]] = [iter(graph[root])]
        state[root] = 1
        while stack:
            node = trail[-1]
            nxt = next(stack[-1], None)
            if nxt is None:                 # all edges of node done
                state[node] = 2
                trail.pop()
                stack.pop()
            elif nxt not in graph:          # unknown service: reported by dependencies()
                continue
            elif state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    where = c.at(("dep", node, nxt), _svc(node, "dependsOn"))
                    out.append(c.problem(where, "dependency cycle: " + " -> ".join(cycle)))
            elif nxt not in state:
                state[nxt] = 1
                trail.append(nxt)
                stack.append(iter(graph[nxt]))
    return out


def references(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        st = c.stack
        services = [s.name for s in st.services]
        volumes = [v.name for v in st.volumes]
        networks = [n.name for n in st.networks]
        configs = [x.name for x in st.configs]
        secrets = [x.name for x in st.secrets]
        for s in st.services:
            for i, v in enumerate(s.volumes):
                if v.type == "volume" and v.source and v.source not in volumes:
                    out.append(c.problem(c.at(("volume", s.name, str(i)), _svc(s.name, "volumes", i)),
                                         f'unknown volume "{v.source}"{_hint(v.source, volumes)}; '
                                         "declare it under spec.volumes"))
            for net in s.network.networks:
                if net not in networks:
                    out.append(c.problem(c.at(("network", s.name, net), _svc(s.name, "network")),
                                         f'unknown network "{net}"{_hint(net, networks)}'))
            if s.network.mode == "container":
                where = c.at(("network", s.name), _svc(s.name, "network"))
                target = s.network.container
                if target == s.name:
                    out.append(c.problem(where, "a service cannot join its own network namespace"))
                elif target not in services:
                    out.append(c.problem(where, f'unknown service "{target}"{_hint(target, services)}'))
            for kind, declared, mounts in (("config", configs, s.configs), ("secret", secrets, s.secrets)):
                for fm in mounts:
                    if fm.name not in declared:
                        out.append(c.problem(c.at((kind, s.name, fm.name), _svc(s.name, f"{kind}s")),
                                             f'unknown {kind} "{fm.name}"{_hint(fm.name, declared)}'))
    return out


def mounts(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        for s in c.stack.services:
            targets: dict[str, int] = {}
            for i, v in enumerate(s.volumes):
                where = c.at(("volume", s.name, str(i)), _svc(s.name, "volumes", i))
                if v.type in ("bind", "volume") and not v.source:
                    out.append(c.problem(where, f"a {v.type} mount needs a source"))
                if v.type == "tmpfs" and v.source:
                    out.append(c.problem(where, "a tmpfs mount takes no source"))
                if v.type == "bind" and v.source and not os.path.isabs(v.source):
                    out.append(c.problem(where, "bind source must be an absolute or relative path"))
                if v.type != "tmpfs" and v.tmpfs_size is not None:
                    out.append(c.problem(where, "tmpfs options on a non-tmpfs mount"))
                if v.tmpfs_size is not None and v.tmpfs_size <= 0:
                    out.append(c.problem(where, "tmpfs size must be > 0"))
                if not v.target.startswith("/"):
                    out.append(c.problem(where, f'target "{v.target}" must be an absolute path'))
                norm = os.path.normpath(v.target)
                if norm in targets:
                    out.append(c.problem(where, f'target "{norm}" is already mounted by '
                                         f"volumes[{targets[norm]}]"))
                targets.setdefault(norm, i)
            for kind, fms in (("config", s.configs), ("secret", s.secrets)):
                for fm in fms:
                    norm = os.path.normpath(fm.target)
                    if norm in targets:
                        out.append(c.problem(c.at((kind, s.name, fm.name), _svc(s.name, f"{kind}s")),
                                             f'target "{norm}" is mounted twice'))
                    targets.setdefault(norm, -1)
    return out


def host_ports(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    """Two publishers of the same port/protocol conflict if their addresses are equal or one is 'all'."""
    seen: list[tuple[str, int, str, str, str]] = []   # ip, port, proto, owner, where
    out = []
    for c in stacks:
        for s in c.stack.services:
            for p in s.ports:
                path = c.at(("port", s.name, str(p)), _svc(s.name, "ports"))
                line, col = c.doc.mark(path)
                if s.replicas > 1:
                    out.append(c.problem(path, f"host port {p.host_port}/{p.protocol} cannot be published "
                                         f"by {s.replicas} replicas; only one can bind it"))
                for ip, port, proto, owner, where in seen:
                    if port == p.host_port and proto == p.protocol and (ip == p.host_ip or not ip or
                                                                          not p.host_ip):
                        out.append(c.problem(path, f"host port {port}/{proto} is already published by "
                                             f"{owner} at {where}"))
                        break
                seen.append((p.host_ip, p.host_port, p.protocol, f"{c.stack.name}/{s.name}",
                             f"{c.doc.file}:{line}:{col}"))
    return out


def cpusets(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        for s in c.stack.services:
            for key, value in (("cpuset", s.resources.cpuset_cpus), ("cpusetMems", s.resources.cpuset_mems)):
                if value is None:
                    continue
                path = _svc(s.name, "resources", key)
                try:
                    cpus = units.parse_cpuset(value)
                except ValueError as exc:
                    out.append(c.problem(path, str(exc)))
                    continue
                if key == "cpuset" and cpus and cpus[-1] >= host.cpus:
                    out.append(c.problem(path, f"cpu {cpus[-1]} does not exist: this host has "
                                         f"{host.cpus} (0-{host.cpus - 1})"))
    return out


def limits(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        for s in c.stack.services:
            r = s.resources

            def bad(key: str, message: str, c: Converted = c, name: str = s.name) -> None:
                out.append(c.problem(_svc(name, "resources", key), message))

            if r.memory is not None and r.memory < MIN_MEMORY:
                bad("memory", f"memory limit {units.format_bytes(r.memory)} is below the minimum 4Mi")
            if r.memory_reservation is not None and r.memory is not None and r.memory_reservation > r.memory:
                bad("memoryReservation", f"reservation {units.format_bytes(r.memory_reservation)} exceeds "
                    f"the memory limit {units.format_bytes(r.memory)}")
            if r.memory_swap is not None and r.memory_swap != -1:
                if r.memory is None:
                    bad("memorySwap", "memorySwap needs memory to be set")
                elif r.memory_swap < r.memory:
                    bad("memorySwap", f"memorySwap {units.format_bytes(r.memory_swap)} is below memory "
                        f"{units.format_bytes(r.memory)} (it is memory plus swap)")
            if r.cpus is not None and not 0 < r.cpus <= host.cpus:
                bad("cpus", f"cpus must be > 0 and <= {host.cpus} (the CPUs of this host), got {r.cpus:g}")
            for u in s.ulimits:
                if u.hard != -1 and (u.soft == -1 or u.soft > u.hard):
                    out.append(c.problem(_svc(s.name, "ulimits", u.name),
                                         f"soft limit {u.soft} exceeds hard limit {u.hard}"))
    return out


def sysctls(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    """Only namespaced sysctls, with the service's own namespace for them (``orchestrator.policy``,
    runc's rule): anything else would be written to the HOST's /proc/sys."""
    out = []
    for c in stacks:
        for s in c.stack.services:
            for key, _value in s.security.sysctls:
                why = sysctl_refusal(key, own_netns=s.network.mode != "host",
                                     own_utsns=s.namespaces.uts == "private",
                                     own_ipcns=s.namespaces.ipc == "private")
                if why:
                    out.append(c.problem(_svc(s.name, "security", "sysctls", key), why, key=True))
    return out


def secret_env(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        for s in c.stack.services:
            env_names = {k for k, _ in s.env}
            used: set[str] = set()
            for fm in s.secrets:
                if not fm.env:
                    continue
                where = c.at(("secret-env", s.name, fm.name), _svc(s.name, "secrets"))
                if not _ENV_NAME.match(fm.env):
                    out.append(c.problem(where, f'invalid environment variable name "{fm.env}"'))
                elif fm.env in env_names or fm.env in used:
                    out.append(c.problem(where, f'environment variable "{fm.env}" is already set'))
                used.add(fm.env)
    return out


def source_files(stacks: Sequence[Converted], host: Host) -> list[Problem]:
    out = []
    for c in stacks:
        for kind, items in (("configs", c.stack.configs), ("secrets", c.stack.secrets)):
            for item in items:
                for key, path in (("file", item.file), ("sops", getattr(item, "sops_file", ""))):
                    if path and not Path(path).is_file():
                        shown = os.path.relpath(path, c.doc.base_dir)
                        out.append(c.problem(("spec", kind, item.name, key), f"file not found: {shown}"))
    return out


CHECKS: tuple[tuple[str, Check], ...] = (
    ("unique-stack-names", unique_stack_names),
    ("replica-name-collisions", replica_name_collisions),
    ("dependencies", dependencies),
    ("references", references),
    ("mounts", mounts),
    ("host-ports", host_ports),
    ("cpusets", cpusets),
    ("limits", limits),
    ("sysctls", sysctls),
    ("secret-env", secret_env),
    ("source-files", source_files),
)


def run_checks(stacks: Sequence[Converted], host: Host | None = None) -> list[Problem]:
    host = host or Host()
    out: list[Problem] = []
    for _name, check in CHECKS:
        out.extend(check(stacks, host))
    return out
