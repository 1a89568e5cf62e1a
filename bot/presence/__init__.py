"""How a run shows itself in Slack: status, progress, answer and controls.

Owns `RunPresence` (`run`) and the assistant pane's variant (`pane`), the Block Kit a run
posts (`blocks`), model text rendered for Slack (`render`) and the per-channel pacing of
edits (`pacer`).

May import: `bot.slack`, `bot.storage` and `rlm`. Never `bot.gather` (its
sibling), nor runs, workspaces, listeners or operations above it.
"""
