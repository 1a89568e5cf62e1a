"""What the app tells the people who run it: Prometheus metrics, the run a log line is about,
and OpenTelemetry spans when its packages are installed.

Owns the process's metric objects and their registry (`metrics`), the run and workspace each
log line carries (`context`) and the run, iteration and map spans (`spans`). Every room
counts through these module-level objects in one line; `bot.ops` serves them (/metrics) and
formats the logs.

The bottom room: it imports nothing of `bot`, so every room above may import it.
"""
