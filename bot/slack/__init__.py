"""Talking to Slack: the one Web API client and the words people read.

Owns the `AsyncWebClient` set-up with Slack's rate limits honoured and `SlackPoster`
(`api`), and every sentence members and admins read (`messages`, `surface_messages`).

May import: `bot.storage`, `bot.telemetry` and `rlm`; settings are passed in, never read
here. Every other room of `bot` may import it.
"""
