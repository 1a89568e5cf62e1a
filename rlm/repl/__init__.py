"""The sandboxed REPL: generated code runs in a worker subprocess, never in the host."""

from rlm.repl._host import CellResult, REPLSession
from rlm.repl._limits import SandboxLimits, clean_environment
from rlm.repl._report import SandboxReport, sandbox_limits_report

__all__ = [
    "CellResult",
    "REPLSession",
    "SandboxLimits",
    "SandboxReport",
    "clean_environment",
    "sandbox_limits_report",
]
