"""Files in a question's scope are read whether or not the app saw their upload: fetched on
demand (files.info, then the download), kept by file id and last change, within the
per-question caps, and only from the channel being read."""

from __future__ import annotations

from bot_harness import mention
from slack_server import BOT_USER


def sub_prompts(llm_server) -> str:
    return "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")


def thread_of(slack, channel: str = "C1") -> list[str]:
    """The run's messages as a member sees them now (the status, collapsed, says what was read)."""
    root = slack.message_with(channel, "*<@U1> asked:*")
    return [m["seen"] for m in slack.thread_view(channel, root["ts"])]


async def test_a_file_shared_before_the_app_saw_it_is_read_once_and_then_kept(
    bot, slack, llm_server
):
    slack.add_message("C1", "Plan attached below.", user="U2")
    slack.add_file(
        "F1", "plan.md", b"# Plan\nShip the beta on 4 May.\n", channel_id="C1", user="U2"
    )
    # No file_shared event: the app was down, or not yet in the channel.
    await bot.events.command("ask when does the beta ship?")
    await bot.settle()

    assert "Ship the beta on 4 May." in sub_prompts(llm_server)
    assert "# File: plan.md (shared by bob on " in sub_prompts(llm_server)
    assert [c.params["file"] for c in slack.calls_to("files.info")] == ["F1"]
    assert len(slack.calls_to("files.download")) == 1
    assert "2 messages" in thread_of(slack)[0] and "1 file" in thread_of(slack)[0]
    [kept] = await bot.store.channel_files("T1", "C1")
    assert (kept.file_id, kept.user_id, kept.changed) == ("F1", "U2", "")
    assert slack.reactions == []  # a question's reading is not an upload to acknowledge

    llm_server.requests.clear()
    await bot.events.command("ask again, when?")
    await bot.settle()
    assert "Ship the beta on 4 May." in sub_prompts(llm_server)
    assert len(slack.calls_to("files.info")) == 1 and len(slack.calls_to("files.download")) == 1


async def test_a_file_changed_since_it_was_kept_is_read_again(bot, slack, llm_server):
    file = slack.add_file("F1", "notes.txt", b"Version one.", channel_id="C1", user="U1")
    share = slack._message("C1", file["shares"]["public"]["C1"][0]["ts"])
    await bot.events.command("ask what do the notes say?")
    await bot.settle()
    assert "Version one." in sub_prompts(llm_server)

    # Edited: Slack's copies of the file now carry a newer `updated` marker.
    file["_content"], file["updated"] = b"Version two.", 1_900_000_000
    share["files"] = [{"id": "F1", "name": "notes.txt", "mimetype": "text/plain",
                       "created": 1_800_000_000, "updated": 1_900_000_000}]  # fmt: skip
    llm_server.requests.clear()
    await bot.events.command("ask and now?")
    await bot.settle()
    assert "Version two." in sub_prompts(llm_server) and "Version one." not in sub_prompts(
        llm_server
    )
    assert len(slack.calls_to("files.download")) == 2
    [kept] = await bot.store.channel_files("T1", "C1")
    assert kept.changed == "1900000000"


async def test_images_in_the_scope_are_skipped_without_a_call_and_counted(bot, slack, llm_server):
    slack.add_message("C1", "Here is the diagram.", user="U2")
    slack.add_file(
        "F1", "diagram.png", b"\x89PNG", channel_id="C1", user="U2", mimetype="image/png"
    )
    await bot.events.command("ask what is in the diagram?")
    await bot.settle()
    assert slack.calls_to("files.info") == [] and slack.calls_to("files.download") == []
    reading = thread_of(slack)[0]
    assert "2 messages" in reading and "1 file" not in reading  # the share is one
    assert "Files not read: 1 image." in reading


async def test_the_per_question_caps_leave_files_out_and_say_so(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_files_per_question=1)
    slack.add_file("F1", "old.txt", b"Older notes.", channel_id="C1", user="U1")
    slack.add_file("F2", "new.txt", b"Newer notes.", channel_id="C1", user="U1")
    await bot.events.command("ask what do the notes say?")
    await bot.settle()
    context = sub_prompts(llm_server)
    assert "Newer notes." in context and "Older notes." not in context  # newest first
    assert "Files not read: 1 file over the per-question limit." in thread_of(slack)[0]
    assert [c.params["file"] for c in slack.calls_to("files.info")] == ["F2"]


async def test_the_byte_cap_is_checked_before_the_download(make_bot, slack, llm_server):
    bot = await make_bot(rlm_max_file_bytes_per_question=10)
    slack.add_message("C1", "Context line.", user="U2")
    slack.add_file("F1", "big.txt", b"y" * 100, channel_id="C1", user="U1")
    await bot.events.command("ask anything?")
    await bot.settle()
    assert slack.calls_to("files.download") == []
    assert "1 file over the per-question limit" in thread_of(slack)[0]


async def test_an_unreadable_file_is_named_in_what_was_read_and_not_replied_to(
    bot, slack, llm_server
):
    slack.add_message("C1", "Report below.", user="U2")
    slack.add_file("F1", "report.pdf", b"%PDF-1.4", channel_id="C1", user="U2", html_instead=True)
    await bot.events.command("ask summarize the report")
    await bot.settle()
    thread = thread_of(slack)
    assert "Files not read: 1 I couldn't read (report.pdf)." in thread[0]
    assert not any("sign-in page" in t for t in slack.posts())


async def test_a_thread_mention_reads_the_threads_unseen_files(bot, slack, llm_server):
    parent = slack.add_message("C1", "Budget draft in this thread.", user="U2")
    slack.add_file("F1", "budget.csv", b"team,share\nsales,60\n", channel_id="C1", user="U2",
                   mimetype="text/csv", thread_ts=parent)  # fmt: skip
    slack.add_file("F2", "elsewhere.txt", b"Not in the thread.", channel_id="C1", user="U2")
    text = f"<@{BOT_USER}> what does sales get?"
    ts = slack.add_message("C1", text, user="U1", thread_ts=parent)
    await bot.events.event(mention("C1", text, ts, thread_ts=parent))
    await bot.settle()
    context = sub_prompts(llm_server)
    assert "sales,60" in context and "Not in the thread." not in context
    assert [c.params["file"] for c in slack.calls_to("files.info")] == ["F1"]
    [kept] = await bot.store.thread_files("T1", "C1", parent)
    assert kept.file_id == "F1"


async def test_a_message_pointing_at_another_channels_file_does_not_read_it(bot, slack, llm_server):
    slack.add_channel("C2", "finance", private=True)
    slack.add_file("F9", "salaries.txt", b"SECRET salaries", channel_id="C2", user="U2")
    # A forged (or stale) reference in C1 to a file shared only in C2.
    slack.add_message("C1", "look", user="U1", files=[{"id": "F9", "name": "salaries.txt"}])
    await bot.events.command("ask what are the salaries?")
    await bot.settle()
    assert "SECRET" not in sub_prompts(llm_server)
    assert slack.calls_to("files.download") == []
    assert await bot.store.channel_files("T1", "C1") == []


async def test_references_that_lead_nowhere_cost_a_bounded_number_of_lookups(
    make_bot, slack, llm_server
):
    bot = await make_bot(rlm_max_files_per_question=3)
    slack.add_message("C1", "Lots of dead links.", user="U2")
    for n in range(20):
        slack.add_message("C1", "", user="U2", files=[{"id": f"FX{n}", "name": f"gone{n}.txt"}])
    await bot.events.command("ask anything left?")
    await bot.settle()
    assert len(slack.calls_to("files.info")) == 6  # twice the file cap
    assert "14 files over the per-question limit" in thread_of(slack)[0]
    assert "6 I couldn't read" in thread_of(slack)[0]


async def test_a_file_read_on_demand_never_sends_the_token_outside_slack(bot, slack, llm_server):
    from slack_server import SlackServer

    with SlackServer() as elsewhere:
        url = f"{elsewhere.url}/files-pri/F1/notes.txt"
        slack.add_file("F1", "notes.txt", b"hi", channel_id="C1", user="U1", url_private=url)
        slack.add_message("C1", "Some context.", user="U2")
        await bot.events.command("ask what do the notes say?")
        await bot.settle()
        assert elsewhere.calls == []
    assert slack.calls_to("files.download") == []
    assert "Files not read: 1 I couldn't read (notes.txt)." in thread_of(slack)[0]
    assert await bot.store.channel_files("T1", "C1") == []
