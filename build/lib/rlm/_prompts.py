"""The system prompts that teach the root model the REPL, per prompt mode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

PromptMode = Literal["standard", "conservative", "no_subcalls"]
PROMPT_MODES: tuple[PromptMode, ...] = ("standard", "conservative", "no_subcalls")

_BASE = """\
You answer a question about a context that is far too large to read at once. You never see \
the context directly. Instead you write Python that runs in a persistent REPL where the \
context is the variable `context`, and you see what your code prints.

How to work:
- Put code in fenced blocks that start with ```repl and end with ```. Every block in your \
reply runs, in order, before you see the results. Variables persist between replies.
- `print()` what you need to see; long output is cut, so print summaries, counts and short \
slices, never the whole context.
- Start by looking: the type of `context`, its length, its first few hundred characters, how \
it is structured (lines, messages, sections, files).
- The standard library is available (re, json, collections, ...).
{subcalls}
When you know the answer, end your reply with one of these on a line of its own, outside any \
code block:
- FINAL(your answer as plain text)
- FINAL_VAR(variable_name) to answer with the value of a REPL variable you built.
FINAL and FINAL_VAR are read after the code in the same reply has run, so you can build a \
variable and name it in the same reply. Do not answer before you have looked at the context.
"""

_STANDARD = """\
Sub-models: these read text for you. Each sees only what you pass it, and each can read \
about 100,000 characters at a time.
- `llm_query(prompt) -> str`: one question to a sub-model.
- `parallel_query(prompt_template, chunks) -> list[str]`: one sub-call per chunk, all run \
concurrently; `{chunk}` in the template is replaced by the chunk; the answers come back in \
the same order as the chunks. A chunk whose call failed comes back as a string starting \
with "Error: ".
Use parallel_query instead of a loop of llm_query calls: it is many times faster. The usual \
shape is map-reduce: split the context into chunks (by messages, sections or about 20,000 to \
50,000 characters), map a focused question over them with parallel_query, then reduce the \
answers with one llm_query (or with Python) into the final answer. Keep the question in \
each prompt so every sub-model knows what to look for; ask it to say plainly when its part \
holds nothing relevant.
"""

_CONSERVATIVE = """\
Sub-models: these read text for you, and each call is expensive, so make few of them.
- `llm_query(prompt) -> str`: one question to a sub-model.
- `parallel_query(prompt_template, chunks) -> list[str]`: one sub-call per chunk, run \
concurrently; `{chunk}` in the template is replaced by the chunk; answers in chunk order; a \
failed call comes back as "Error: ...".
Make chunks as large as a sub-model can read (about 100,000 characters) so there are few of \
them, narrow the context with Python first (re, keyword search, slicing) and send only what \
matters. Prefer one parallel_query plus one llm_query to reduce over many small calls. Never \
loop over chunks with llm_query: use parallel_query.
"""

_NO_SUBCALLS = """\
There are no sub-models in this session: llm_query and parallel_query are disabled. Answer \
with Python alone: search with re, count, slice, parse, and print the parts that answer the \
question.
"""

_SUBCALL_TEXT: dict[PromptMode, str] = {
    "standard": _STANDARD,
    "conservative": _CONSERVATIVE,
    "no_subcalls": _NO_SUBCALLS,
}


def system_prompt(mode: PromptMode) -> str:
    return _BASE.format(subcalls=_SUBCALL_TEXT[mode])


def describe_context(context: str | Sequence[str]) -> str:
    """A short description of the context's shape, for the root model's first prompt."""
    if isinstance(context, str):
        lines = context.count("\n") + 1 if context else 0
        return f"`context` is a str of {len(context):,} characters in {lines:,} lines."
    sizes = [len(c) for c in context]
    total = sum(sizes)
    shown = ", ".join(f"{s:,}" for s in sizes[:20]) + (", ..." if len(sizes) > 20 else "")
    return (
        f"`context` is a list of {len(sizes):,} strings, {total:,} characters in all; "
        f"their lengths: [{shown}]."
    )


def first_prompt(query: str, context: str | Sequence[str]) -> str:
    return (
        f"{describe_context(context)}\n\nThe question: {query}\n\n"
        "Look at the context with code first; do not answer yet."
    )


def continue_prompt(
    outputs: Sequence[str], query: str, iterations_left: int, note: str | None = None
) -> str:
    if outputs:
        shown = "\n\n".join(
            f"Output of block {i}:\n{out or '(nothing printed)'}"
            for i, out in enumerate(outputs, 1)
        )
    elif note is None:
        shown = "Your reply had no ```repl block and no FINAL, so nothing ran."
    else:
        shown = ""
    if note is not None:
        shown = f"{shown}\n\n{note}".strip()
    return (
        f"{shown}\n\nThe question, again: {query}\n"
        f"Replies left: {iterations_left}. Continue, or answer with FINAL(...) / FINAL_VAR(...)."
    )


def missing_variable_prompt(name: str) -> str:
    return (
        f"FINAL_VAR({name}) names a variable that does not exist in the REPL, so that is not "
        "an answer. Set the variable in a ```repl block, or answer with FINAL(...)."
    )


def last_chance_prompt(reason: str) -> str:
    return (
        f"{reason} No more code will run. Give your best final answer now from what you have "
        "learned, as FINAL(your answer)."
    )
