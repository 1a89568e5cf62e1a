"""The sandboxed REPL: generated code runs in a worker subprocess, never in the host."""

from rlm.repl._host import CellResult, REPLSession, SandboxLimits, clean_environment

__all__ = ["CellResult", "REPLSession", "SandboxLimits", "clean_environment"]
