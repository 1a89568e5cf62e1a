"""Operations: what an operator runs, reads and relies on around the app.

Owns the `rlm-bot` sub-commands (`cli`), the HTTP server (`http_server`), health and
readiness with Socket Mode's listener (`health`), /metrics (`metrics`), logging with secrets
redacted and JSON lines (`logs`), the REPL sandbox probe at start-up
(`isolation`), replicas finding each other's orphaned runs (`replicas`) and the retention
purge (`housekeeping`).

May import: `bot.workspaces` and every room below it, `bot.settings` and `rlm`.
Imported by `bot.services` (the purge it stops), `bot.app` and `bot.__main__`.
"""
