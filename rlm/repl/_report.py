"""Which of the sandbox's limits hold on this machine, in words an operator acts on.

Where cgroups can be made, memory and processes are bounded for the whole sandbox (every
process in it, and its tmpfs). Where they cannot (a non-root host, or cgroups not writable),
memory is bounded per process only (RLIMIT_AS: four processes may each use the limit) and
processes by RLIMIT_NPROC, which counts per uid: per sandbox because each sandbox has a uid of
its own (a leased one on a root host) or a user namespace of its own (a non-root host).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rlm.repl._cgroup import OOM_SCORE_ADJ, probe_cgroups
from rlm.repl._limits import SandboxLimits
from rlm.repl._sandbox import choose_method

# -- what operators read ---------------------------------------------------------------------
MSG_MEMORY = {
    "sandbox": "memory: {mb:,} MiB for the whole sandbox (cgroup {version}, tmpfs included)",
    "process": "memory: {mb:,} MiB per process only (RLIMIT_AS: no sandbox cgroup), "
    "so several processes together can hold more",
    "none": "memory: not bounded (the sandbox cannot start)",
}
MSG_PROCESSES = {
    "sandbox": "processes: {n:,} for the whole sandbox (cgroup pids)",
    "uid": "processes: {n:,} (RLIMIT_NPROC of a uid leased for this sandbox alone)",
    "userns": "processes: {n:,} (RLIMIT_NPROC in the sandbox's own user namespace)",
    "none": "processes: not capped (no isolation: RLIMIT_NPROC would count the host's own)",
}
MSG_ISOLATION = {
    "bwrap": "isolation: bwrap",
    "unshare": "isolation: unshare",
    "none": "isolation: NONE (generated code runs with this process's network and files)",
    "": "isolation: unavailable ({error})",
}
MSG_OOM = "out of memory: the sandbox's processes are killed first (oom_score_adj {adj})"


@dataclass(frozen=True)
class SandboxReport:
    """What holds for a sandbox started now with the given limits."""

    isolation: str  # "bwrap" | "unshare" | "none" | "" (cannot start: see `error`)
    memory: str  # "sandbox" (cgroup) | "process" (RLIMIT_AS) | "none"
    processes: str  # "sandbox" (cgroup) | "uid" (leased uid) | "userns" | "none"
    memory_mb: int
    max_processes: int
    cgroup_version: str = ""
    error: str = ""

    @property
    def memory_bounded(self) -> bool:
        """Whether memory is bounded for the whole sandbox, not just per process."""
        return self.memory == "sandbox"

    def lines(self) -> list[str]:
        return [
            MSG_ISOLATION[self.isolation].format(error=self.error),
            MSG_MEMORY[self.memory].format(mb=self.memory_mb, version=self.cgroup_version),
            MSG_PROCESSES[self.processes].format(n=self.max_processes),
            *([MSG_OOM.format(adj=OOM_SCORE_ADJ)] if self.isolation else []),
        ]

    def text(self) -> str:
        return "; ".join(self.lines())


def sandbox_limits_report(limits: SandboxLimits | None = None) -> SandboxReport:
    """Which limits hold for sandboxes started with `limits` (probes once per process: may run
    a worker the first time, so call it off the event loop)."""
    limits = limits or SandboxLimits()
    method, error = choose_method(limits.isolation, limits.require_isolation)
    sizes = (limits.memory_mb, limits.processes)
    if error:
        return SandboxReport("", "none", "none", *sizes, error=error)
    if method == "none":  # no cgroup, and no RLIMIT_NPROC (see REPLSession._spawn)
        return SandboxReport("none", "process", "none", *sizes)
    support = probe_cgroups()
    version = ""
    if support.memory:
        v2 = os.path.exists(os.path.join(support.memory, "cgroup.controllers"))
        version = "v2" if v2 else "v1"
    processes = "sandbox" if support.pids else "uid" if os.geteuid() == 0 else "userns"
    memory = "sandbox" if support.memory else "process"
    return SandboxReport(method, memory, processes, *sizes, cgroup_version=version)
