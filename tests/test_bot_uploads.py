"""Shared files end to end: download with the bot token from Slack only, extract, keep, and
acknowledge quietly (a reaction); only a problem gets a reply, once, an unsupported type
included; images get none."""

from __future__ import annotations

from bot_harness import file_shared
from slack_server import BOT_TOKEN, BOT_USER, SlackServer

from bot.slack import messages


def file_share_message(file: dict, *, channel: str = "C1", user: str = "U1") -> dict:
    share = file["shares"]["public"][channel][0]
    return {
        "type": "message",
        "subtype": "file_share",
        "channel": channel,
        "user": user,
        "text": "",
        "ts": share["ts"],
        "files": [{"id": file["id"], "name": file["name"]}],
    }


async def test_a_shared_file_is_downloaded_kept_acknowledged_and_used(bot, slack, llm_server):
    content = b"Launch moved to Monday.\nBudget unchanged.\n"
    file = slack.add_file("F1", "notes.txt", content, channel_id="C1", user="U1")
    share_ts = file["shares"]["public"]["C1"][0]["ts"]

    reply = await bot.events.event(file_shared("C1", "F1"))
    assert reply.status == 200
    await bot.settle()

    [download] = slack.calls_to("files.download")
    assert download.token == BOT_TOKEN
    assert slack.posts() == []  # acknowledged quietly
    assert slack.reactions == [("C1", share_ts, "white_check_mark")]
    [kept] = await bot.store.channel_files("T1", "C1")
    assert (kept.file_id, kept.name, kept.size, kept.user_id) == ("F1", "notes.txt", 42, "U1")
    assert kept.text.startswith("Launch moved to Monday.")

    await bot.events.command("ask when is the launch?")
    await bot.settle()
    context = "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")
    assert "# File: notes.txt (shared by Alice on " in context
    assert "Launch moved to Monday." in context


async def test_a_rate_limited_download_is_retried_after_retry_after(bot, slack):
    slack.add_file("F1", "notes.txt", b"hello there", channel_id="C1", user="U1")
    slack.rate_limit("files.download", times=2, retry_after=0)
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    downloads = [c for c in slack.calls if c.method == "files.download"]
    assert [c.status for c in downloads] == [429, 429, 200]
    [kept] = await bot.store.channel_files("T1", "C1")
    assert kept.text == "hello there"


async def test_file_shared_and_the_file_share_message_handle_the_file_once(bot, slack):
    file = slack.add_file("F1", "notes.md", b"# Notes\nhello\n", channel_id="C1", user="U1")
    await bot.events.event(file_share_message(file))
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    await bot.events.event(file_shared("C1", "F1"), retry_num=1)
    await bot.settle()
    assert len(slack.calls_to("files.info")) == 1
    assert len(slack.calls_to("files.download")) == 1
    assert slack.posts("C1") == [] and len(slack.reactions) == 1


async def test_a_mention_with_a_file_waits_for_the_file_and_reads_it(bot, slack, llm_server):
    text = f"<@{BOT_USER}> what is in this file?"
    file = slack.add_file("F1", "plan.txt", b"Phase two starts in May.", channel_id="C1", user="U1")
    share_ts = file["shares"]["public"]["C1"][0]["ts"]
    event = {
        "type": "app_mention",
        "channel": "C1",
        "user": "U1",
        "text": text,
        "ts": share_ts,
        "files": [{"id": "F1", "name": "plan.txt"}],
    }
    await bot.events.event(file_share_message(file) | {"text": text})
    await bot.events.event(event)
    await bot.settle()
    context = "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")
    assert "Phase two starts in May." in context
    assert len(slack.calls_to("files.download")) == 1


async def test_images_are_skipped_without_a_word(bot, slack):
    slack.add_file("F1", "architecture.png", b"\x89PNG\r\n", channel_id="C1", user="U1",
                   mimetype="image/png")  # fmt: skip
    slack.add_file("F2", "scan", b"\xff\xd8\xff", channel_id="C1", user="U1",
                   mimetype="image/jpeg")  # fmt: skip
    for file_id in ("F1", "F2"):
        await bot.events.event(file_shared("C1", file_id))
    await bot.settle()
    assert slack.posts() == [] and slack.ephemerals() == [] and slack.reactions == []
    assert slack.calls_to("files.download") == []  # judged by name or type alone
    assert await bot.store.channel_files("T1", "C1") == []


async def test_other_unsupported_types_get_one_reply_naming_them_in_their_thread(bot, slack):
    shared = {
        "F1": slack.add_file("F1", "tool.bin", bytes(range(256)) * 8, channel_id="C1",
                             user="U1", mimetype="application/octet-stream"),
        "F2": slack.add_file("F2", "data.txt", bytes(range(256)) * 8, channel_id="C1",
                             user="U1"),
        "F3": slack.add_file("F3", "clip.dat", b"x", channel_id="C1", user="U1",
                             mimetype="video/mp4"),
        "F4": slack.add_file("F4", "old.xls", b"\xd0\xcf\x11\xe0", channel_id="C1",
                             user="U1", mimetype="application/vnd.ms-excel"),
    }  # fmt: skip
    for file_id in shared:
        await bot.events.event(file_shared("C1", file_id))
        await bot.events.event(file_shared("C1", file_id), event_id=f"Ev-again-{file_id}")
    await bot.settle()
    replies = {}
    for file_id, file in shared.items():
        share_ts = file["shares"]["public"]["C1"][0]["ts"]
        [replies[file_id]] = slack.posts("C1", thread_ts=share_ts)  # one each, in its thread
    assert replies["F1"] == messages.file_rejected(
        "tool.bin looks like a program or library; I read text, PDF, Word, Excel and "
        "PowerPoint files."
    )
    assert replies["F2"].startswith(":no_entry_sign: data.txt looks like a binary file")
    assert replies["F3"].startswith(":no_entry_sign: clip.dat looks like an audio or video file")
    assert replies["F4"].startswith(
        ":no_entry_sign: old.xls is a spreadsheet format I don't read; save it as .xlsx or CSV"
    )
    # Refused by name or type alone, without a download; data.txt had to be looked at.
    assert [c.path.split("/")[2] for c in slack.calls_to("files.download")] == ["F2"]
    assert slack.reactions == [] and await bot.store.channel_files("T1", "C1") == []


async def test_an_empty_file_is_a_problem_told_once_per_file(bot, slack):
    slack.add_channel("C2", "random")
    empty = slack.add_file("F2", "empty.txt", b"", channel_id="C1", user="U1")
    await bot.events.event(file_shared("C1", "F2"))
    await bot.settle()
    [about_empty] = slack.posts("C1", thread_ts=empty["shares"]["public"]["C1"][0]["ts"])
    assert about_empty.startswith(":no_entry_sign: empty.txt is empty")
    # The same file shared again, here and in another channel: no second reply.
    await bot.events.event(file_shared("C1", "F2"), event_id="Ev-again")
    slack.files["F2"]["shares"]["public"]["C2"] = [{"ts": slack.add_message("C2", "")}]
    await bot.events.event(file_shared("C2", "F2"))
    await bot.settle()
    assert len(slack.posts()) == 1 and slack.reactions == []
    assert await bot.store.channel_files("T1", "C1") == []


async def test_an_oversized_file_is_refused_before_download(make_bot, slack):
    bot = await make_bot(rlm_max_file_bytes=1000)
    file = slack.add_file("F1", "big.txt", b"x" * 5000, channel_id="C1", user="U1")
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    share_ts = file["shares"]["public"]["C1"][0]["ts"]
    assert slack.posts("C1", thread_ts=share_ts) == [
        messages.file_too_large("big.txt", "4.9 KB", "1000 bytes")
    ]
    assert slack.calls_to("files.download") == []
    assert await bot.store.channel_files("T1", "C1") == []


async def test_a_file_larger_than_files_info_said_is_cut_off(make_bot, slack):
    bot = await make_bot(rlm_max_file_bytes=1000)
    slack.add_file("F1", "liar.txt", b"y" * 200_000, channel_id="C1", user="U1", size=10)
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    [post] = slack.posts("C1")
    assert post.startswith("I can't use *liar.txt* (over ") and "1000 bytes limit" in post
    assert await bot.store.channel_files("T1", "C1") == []


async def test_an_html_page_instead_of_the_file_is_an_auth_failure(bot, slack):
    slack.add_file("F1", "report.pdf", b"%PDF-1.4", channel_id="C1", user="U1", html_instead=True)
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    assert slack.posts("C1") == [messages.file_auth_failed("report.pdf")]
    assert await bot.store.channel_files("T1", "C1") == []


async def test_the_bot_token_is_never_sent_outside_slack(bot, slack):
    with SlackServer() as elsewhere:
        url = f"{elsewhere.url}/files-pri/F1/notes.txt"
        slack.add_file("F1", "notes.txt", b"hi", channel_id="C1", user="U1", url_private=url)
        await bot.events.event(file_shared("C1", "F1"))
        await bot.settle()
        assert elsewhere.calls == []
    assert slack.posts("C1") == [messages.file_host_refused("notes.txt", "127.0.0.1")]
    assert slack.calls_to("files.download") == []
    assert await bot.store.channel_files("T1", "C1") == []


async def test_a_missing_files_scope_is_explained_to_the_uploader(bot, slack):
    slack.add_file("F1", "notes.txt", b"hi", channel_id="C1", user="U1")
    slack.missing_scopes = {"files:read"}
    await bot.events.event(file_shared("C1", "F1"))
    await bot.settle()
    assert slack.ephemerals("U1") == [messages.missing_scope("files:read")]
    assert slack.posts() == []


async def test_the_bots_own_uploads_are_ignored(bot, slack):
    slack.add_file("F1", "answer.txt", b"mine", channel_id="C1", user=BOT_USER)
    await bot.events.event(file_shared("C1", "F1", user=BOT_USER))
    await bot.settle()
    assert slack.calls_to("files.download") == [] and slack.posts() == []
