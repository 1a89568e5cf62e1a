"""Operations: what an operator runs, reads and relies on around the app.

Owns the `rlm-bot` sub-commands (`cli`), the HTTP server with health and metrics
(`http_server`), logging with secrets redacted (`logs`), the REPL sandbox probe at start-up
(`isolation`), replicas finding each other's orphaned runs (`replicas`) and the retention
purge (`housekeeping`).

May import: `bot.services` and every room below it. Only `bot.app` and `bot.__main__`
import it.
"""
