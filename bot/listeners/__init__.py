"""Where a question arrives: the thin Slack listeners.

Owns the handlers Bolt calls: `/rlm` (`commands`), mentions and shared files (`events`),
buttons (`actions`), the assistant pane, DMs and App Home (`surfaces`, `home`), files
deleted or changed in Slack and `/rlm forget` (`lifecycle`). Each parses, acknowledges and
hands the work to a service; none holds logic a test would want to call without Slack.

May import: `bot.services` (the `Services` they hand work to) and every room below
it. Nothing but `bot.app`, which registers them, imports it.
"""
