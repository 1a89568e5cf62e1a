"""Attacks on the REPL sandbox, run through the real worker."""
