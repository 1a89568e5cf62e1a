"""The Slack app on top of rlm, in rooms by the part each plays for a question: it arrives
(`listeners`), becomes a run (`runs`), gathers what it reads (`gather`), shows itself
(`presence`) and is stored (`storage`), with `slack` (the Web API client and the words),
tenancy (`workspaces`) and operations (`ops`) beside them, and `telemetry` (metrics, log
context, spans) under all. `app` puts them together."""
