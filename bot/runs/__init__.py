"""Where a question becomes a run: the runner and what bounds it.

Owns `Runner` (`runner`), what it is asked (`question`), how a run ends and what it tells
the asker (`ends`), budgets per run and per day (`budgets`), run slots per workspace (`slots`), the
run queue and limits shared across replicas (`queue`, `shared_limits`), and the problems a
run records for operators (`problems`).

May import: `bot.gather`, `bot.presence`, `bot.slack`, `bot.storage`, `bot.telemetry` and
`rlm`; settings are passed in. Never the workspaces, operations, services or listeners above
it.
"""
