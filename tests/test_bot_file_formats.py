"""Excel and PowerPoint files shared in Slack, end to end through the loopback Slack: kept
and acknowledged like text; a hostile one gets one reply and costs nothing else."""

from __future__ import annotations

from bot_harness import file_shared
from office_files import make_pptx, make_xlsx, rezip

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


def share_ts(file: dict, channel: str = "C1") -> str:
    return str(file["shares"]["public"][channel][0]["ts"])


async def test_an_uploaded_workbook_and_deck_are_kept_and_read(bot, slack, llm_server):
    book = slack.add_file("F1", "budget.xlsx", make_xlsx(), channel_id="C1", user="U1",
                          mimetype=XLSX)  # fmt: skip
    deck = slack.add_file("F2", "review.pptx", make_pptx(), channel_id="C1", user="U1",
                          mimetype=PPTX)  # fmt: skip
    for file_id in ("F1", "F2"):
        await bot.events.event(file_shared("C1", file_id))
    await bot.settle()
    assert slack.posts() == []  # acknowledged quietly
    assert sorted(slack.reactions) == sorted(
        [("C1", share_ts(book), "white_check_mark"), ("C1", share_ts(deck), "white_check_mark")]
    )
    kept = {f.name: f.text for f in await bot.store.channel_files("T1", "C1")}
    assert "## Sheet: Budget\nteam\tshare\tnote" in kept["budget.xlsx"]
    assert "Notes: Mention the budget freeze." in kept["review.pptx"]

    await bot.events.command("ask what is the sales share?")
    await bot.settle()
    context = "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")
    assert "# File: budget.xlsx (shared by Alice on " in context and "sales\t60" in context


async def test_a_zip_bomb_workbook_gets_one_reply_and_the_other_files_are_kept(make_bot, slack):
    bot = await make_bot(rlm_max_file_bytes=40_000)
    bomb = rezip(make_xlsx(), add={"xl/media/padding.bin": b"\0" * (4 * 1024 * 1024)})
    assert len(bomb) < 40_000
    bad = slack.add_file("F1", "bomb.xlsx", bomb, channel_id="C1", user="U1", mimetype=XLSX)
    slack.add_file("F2", "notes.txt", b"Launch moved to Monday.", channel_id="C1", user="U1")
    deck = slack.add_file("F3", "review.pptx", make_pptx(), channel_id="C1", user="U1",
                          mimetype=PPTX)  # fmt: skip
    for file_id in ("F1", "F2", "F3"):
        await bot.events.event(file_shared("C1", file_id))
    await bot.events.event(file_shared("C1", "F1"), event_id="Ev-again")
    await bot.settle()
    assert slack.posts("C1", thread_ts=share_ts(bad)) == [
        ":no_entry_sign: bomb.xlsx unpacks to more than 3.8 MB, which is more than I can read."
    ]
    assert len(slack.posts()) == 1
    assert sorted(f.name for f in await bot.store.channel_files("T1", "C1")) == [
        "notes.txt",
        "review.pptx",
    ]
    assert ("C1", share_ts(deck), "white_check_mark") in slack.reactions


async def test_a_workbook_in_the_scope_is_read_on_demand(bot, slack, llm_server):
    slack.add_message("C1", "Budget attached.", user="U2")
    slack.add_file("F1", "budget.xlsx", make_xlsx(), channel_id="C1", user="U2", mimetype=XLSX)
    await bot.events.command("ask what is the support share?")
    await bot.settle()
    context = "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")
    assert "support\t40" in context
    [kept] = await bot.store.channel_files("T1", "C1")
    assert kept.name == "budget.xlsx"


async def test_an_unsupported_file_in_the_scope_is_named_without_a_download(bot, slack, llm_server):
    slack.add_message("C1", "Old formats below.", user="U2")
    slack.add_file("F1", "old.xls", b"\xd0\xcf\x11\xe0", channel_id="C1", user="U2",
                   mimetype="application/vnd.ms-excel")  # fmt: skip
    slack.add_file("F2", "photo.jpg", b"\xff\xd8", channel_id="C1", user="U2",
                   mimetype="image/jpeg")  # fmt: skip
    await bot.events.command("ask what is in the files?")
    await bot.settle()
    assert slack.calls_to("files.download") == [] and slack.calls_to("files.info") == []
    root = slack.message_with("C1", "*<@U1> asked:*")
    status = slack.thread_view("C1", root["ts"])[0]["seen"]
    assert "Files not read: 1 I couldn't read (old.xls); 1 image." in status
