"""What a sandbox may use: the resource limits, isolation choice and extra packages of a
REPL worker (`SandboxLimits`), and the whole environment it starts with."""

from __future__ import annotations

from dataclasses import dataclass

from rlm.repl._sandbox import validate_choice
from rlm.repl._view import check_packages


@dataclass(frozen=True)
class SandboxLimits:
    """How the worker is confined: resource limits (setrlimit) and isolation.

    `isolation`: "auto" uses bwrap, else unshare, else (with a loud warning) none; "bwrap" or
    "unshare" insist on that method; "none" runs the worker unisolated. With
    `require_isolation`, a session that cannot isolate refuses to start (REPLError).
    `processes` (RLIMIT_NPROC) holds only when isolated: it counts all of a uid's processes.
    Where the machine has cgroups, `memory_mb` and `processes` also bound the whole sandbox
    (every process in it, and its tmpfs). `disk_mb` is the size of the worker's directory.
    The worker's filesystem is an allowlist (see `_view`): `packages` names installed
    distributions whose files it may also read and import (an unknown name is a
    ConfigurationError). `private_paths` is accepted for compatibility and changes nothing:
    no host path outside the allowlist is visible. `max_cell_output_chars` is what the host
    keeps of one cell's output; the rest is read and dropped.
    """

    memory_mb: int = 4096
    file_size_mb: int = 512
    open_files: int = 256
    cpu_seconds: int = 600
    processes: int = 64
    disk_mb: int = 512
    isolation: str = "auto"
    require_isolation: bool = False
    max_message_mb: int = 256  # the largest frame the host accepts from the worker
    max_cell_output_chars: int = 1_000_000
    private_paths: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_choice(self.isolation, self.require_isolation)
        check_packages(self.packages)

    def as_rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * 1024 * 1024,
            "RLIMIT_FSIZE": self.file_size_mb * 1024 * 1024,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_CORE": 0,
        }


def clean_environment(workdir: str) -> dict[str, str]:
    """The worker's whole environment: no keys, no tokens, nothing inherited."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }
