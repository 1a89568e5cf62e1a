"""Where a run gathers what it reads: channel and thread history, search, files.

Owns `ContextGatherer` (`context`) and what it yields (`gathered`), the files in a
question's scope (`scope_files`), file uploads kept as text (`uploads`) and text extraction
from PDF, Word, HTML and the like (`files`).

May import: `bot.slack`, `bot.storage` and `rlm`. Never `bot.presence`
(its sibling), nor runs, workspaces, listeners or operations above it.
"""
