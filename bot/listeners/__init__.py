"""Where a question arrives: the thin Slack listeners.

Owns the handlers Bolt calls: slash commands, mentions and file events (`commands`,
`events`), buttons (`actions`), the assistant pane, DMs and App Home (`surfaces`, `home`),
the channel lifecycle events and `/rlm forget` (`lifecycle`). Each parses, acknowledges and
hands the work to a service; none holds logic a test would want to call without Slack.

May import: `bot.services` and every room below it. Nothing but `bot.app` imports it.
"""
