"""The assistant pane and DMs end to end: suggested prompts, status while working, questions
about the channel being viewed (only for its members, and only if the app can read it),
answers in the pane's thread; DMs answered over their own thread."""

from __future__ import annotations

from slack_server import BOT_ID, BOT_USER
from slack_surfaces import context_changed, dm_message, thread_started

from bot.slack import surface_messages


def sub_prompts(llm_server) -> str:
    return "\n".join(r.prompt for r in llm_server.requests if r.kind == "sub")


def open_pane(slack, channel: str = "D1", user: str = "U1") -> str:
    slack.add_dm(channel, user)
    return slack.add_message(
        channel, "", user=BOT_USER, bot_id=BOT_ID, subtype="assistant_app_thread"
    )


async def ask_in_pane(bot, slack, thread_ts: str, question: str, *, user: str = "U1") -> str:
    ts = slack.add_message("D1", question, user=user, thread_ts=thread_ts)
    await bot.events.event(dm_message("D1", question, ts, user=user, thread_ts=thread_ts))
    await bot.settle()
    return ts


async def test_a_new_pane_thread_gets_suggested_prompts_and_remembers_the_view(bot, slack):
    thread_ts = open_pane(slack)
    reply = await bot.events.event(thread_started("D1", thread_ts, viewing="C1"))
    assert reply.status == 200 and reply.seconds < 1.0
    await bot.settle()
    [prompts] = slack.suggested_prompts
    assert prompts["channel"] == "D1" and prompts["thread_ts"] == thread_ts
    assert [p["title"] for p in prompts["prompts"]] == [t for t, _ in surface_messages.PANE_PROMPTS]
    pane = await bot.store.pane_context("D1", thread_ts)
    assert (pane.viewed_channel_id, pane.user_id, pane.team_id) == ("C1", "U1", "T1")
    assert slack.posts() == []  # prompts, not a message

    await bot.events.event(context_changed("D1", thread_ts, viewing="C7"))
    await bot.settle()
    assert (await bot.store.pane_context("D1", thread_ts)).viewed_channel_id == "C7"


async def test_a_member_asks_about_the_viewed_channel_and_gets_the_answer_in_the_pane(
    bot, slack, llm_server
):
    slack.add_message("C1", "The launch moved to Friday.", user="U2")
    llm_server.sub_responder = lambda prompt: "Friday."
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="C1"))
    await bot.settle()

    question_ts = await ask_in_pane(bot, slack, thread_ts, "When is the launch?")

    assert "The launch moved to Friday." in sub_prompts(llm_server)
    pane_posts = slack.posts("D1", thread_ts=thread_ts)
    assert len(pane_posts) == 1 and pane_posts[0].startswith("Friday.")  # only the answer
    assert slack.posts("C1") == []  # nothing in the channel being viewed
    assert slack.pane_titles == [("D1", thread_ts, "When is the launch?")]
    statuses = [s for c, t, s in slack.pane_statuses if (c, t) == ("D1", thread_ts)]
    assert statuses[0] == surface_messages.PANE_STATUS_THINKING
    assert any(s.startswith("is thinking (step 1)") for s in statuses)
    assert statuses[-1] == ""  # cleared with the answer
    [run] = await bot.store.list_runs()
    assert (run.channel_id, run.thread_ts, run.trigger, run.status) == (
        "D1", thread_ts, "assistant", "finished",
    )  # fmt: skip
    assert question_ts not in {
        c.params.get("thread_ts") for c in slack.calls_to("chat.postMessage")
    }
    membership = slack.calls_to("conversations.members")
    assert membership and membership[0].params["channel"] == "C1"


async def test_a_non_member_viewing_a_channel_is_refused_and_nothing_is_read(
    bot, slack, llm_server
):
    slack.add_message("C1", "Members-only plans.", user="U2")
    slack.set_members("C1", ["U2", BOT_USER])
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="C1"))
    await bot.settle()
    await ask_in_pane(bot, slack, thread_ts, "Summarize this channel")

    assert slack.posts("D1", thread_ts=thread_ts) == [surface_messages.PANE_NOT_A_MEMBER]
    assert [c.method for c in slack.reads_of("C1")] == ["conversations.members"]
    assert llm_server.count("any") == 0 and await bot.store.list_runs() == []


async def test_a_channel_the_app_is_not_in_is_not_read(bot, slack, llm_server):
    slack.add_channel("C2", "design", member=False)
    slack.add_message("C2", "Not for the app.", user="U2")
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="C2"))
    await bot.settle()
    await ask_in_pane(bot, slack, thread_ts, "Summarize this channel")
    assert slack.posts("D1", thread_ts=thread_ts) == [surface_messages.PANE_CANNOT_READ]
    assert slack.reads_of("C2") == [] and llm_server.count("any") == 0


async def test_a_dm_with_someone_else_being_viewed_is_never_read(bot, slack, llm_server):
    slack.add_dm("D9", "U2")  # the user's DM with Bob, which the app must not read
    slack.add_message("D9", "Private chat.", user="U2")
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="D9"))
    await bot.settle()
    await ask_in_pane(bot, slack, thread_ts, "What did Bob say?")
    assert slack.posts("D1", thread_ts=thread_ts) == [surface_messages.PANE_CANNOT_READ]
    assert slack.reads_of("D9") == [] and llm_server.count("any") == 0


async def test_a_channel_of_another_workspace_is_refused(bot, slack, llm_server):
    thread_ts = open_pane(slack)
    event = thread_started("D1", thread_ts, viewing="C1")
    event["assistant_thread"]["context"]["team_id"] = "T2"
    await bot.events.event(event)
    await bot.settle()
    await ask_in_pane(bot, slack, thread_ts, "Summarize")
    assert slack.posts("D1", thread_ts=thread_ts) == [surface_messages.PANE_OTHER_WORKSPACE]
    assert slack.reads_of("C1") == []


async def test_without_a_viewed_channel_the_pane_answers_over_its_own_thread(
    bot, slack, llm_server
):
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts))  # viewing no channel
    await bot.settle()
    await ask_in_pane(bot, slack, thread_ts, "Count the words: alpha beta gamma")
    assert "alpha beta gamma" in sub_prompts(llm_server)
    assert len(slack.posts("D1", thread_ts=thread_ts)) == 1
    assert slack.reads_of("C1") == []


async def test_a_top_level_dm_is_answered_in_its_thread_with_its_file(bot, slack, llm_server):
    slack.add_dm("D1", "U1")
    file = slack.add_file("F1", "memo.txt", b"The memo says: ship on Monday.", channel_id="D1",
                          user="U1")  # fmt: skip
    share_ts = file["shares"]["private"]["D1"][0]["ts"]
    slack.channels["D1"]["messages"][-1]["text"] = "what does the memo say?"
    event = dm_message("D1", "what does the memo say?", share_ts, subtype="file_share",
                       files=[{"id": "F1", "name": "memo.txt"}])  # fmt: skip
    await bot.events.event(event)
    await bot.settle()
    assert "ship on Monday" in sub_prompts(llm_server)
    thread = slack.posts("D1", thread_ts=share_ts)
    assert thread[-1].endswith(" s_")
    assert ("D1", share_ts, "white_check_mark") in slack.reactions  # the file, quietly
    [run] = await bot.store.list_runs()
    assert (run.trigger, run.channel_id, run.thread_ts) == ("dm", "D1", share_ts)


async def test_the_apps_own_dm_messages_start_nothing(bot, slack, llm_server):
    slack.add_dm("D1", "U1")
    ts = slack.add_message("D1", "An answer.", user=BOT_USER, bot_id=BOT_ID)
    await bot.events.event(dm_message("D1", "An answer.", ts, user=BOT_USER, bot_id=BOT_ID))
    await bot.settle()
    assert llm_server.count("any") == 0 and slack.posts() == []


async def test_a_pane_question_with_a_file_is_about_the_file_not_the_viewed_channel(
    bot, slack, llm_server
):
    slack.add_message("C1", "Channel chatter.", user="U2")
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="C1"))
    await bot.settle()
    file = slack.add_file("F1", "spec.md", b"The spec wants two regions.", channel_id="D1",
                          user="U1", thread_ts=thread_ts)  # fmt: skip
    share_ts = file["shares"]["private"]["D1"][0]["ts"]
    event = dm_message("D1", "what does the spec want?", share_ts, thread_ts=thread_ts,
                       subtype="file_share", files=[{"id": "F1", "name": "spec.md"}])  # fmt: skip
    await bot.events.event(event)
    await bot.settle()
    context = sub_prompts(llm_server)
    assert "two regions" in context and "Channel chatter." not in context
    assert slack.reads_of("C1") == []
    assert len(slack.posts("D1", thread_ts=thread_ts)) == 1


async def test_a_file_alone_or_an_empty_message_starts_no_run(bot, slack, llm_server):
    slack.add_dm("D1", "U1")
    file = slack.add_file("F1", "notes.txt", b"Keep this.", channel_id="D1", user="U1")
    share_ts = file["shares"]["private"]["D1"][0]["ts"]
    await bot.events.event(dm_message("D1", "", share_ts, subtype="file_share",
                                      files=[{"id": "F1", "name": "notes.txt"}]))  # fmt: skip
    blank = slack.add_message("D1", "   ", user="U1")
    await bot.events.event(dm_message("D1", "   ", blank))
    await bot.settle()
    assert slack.reactions == [("D1", share_ts, "white_check_mark")]  # kept, quietly
    assert slack.posts() == [] and llm_server.count("any") == 0
    assert await bot.store.list_runs() == []
    [kept] = await bot.store.channel_files("T1", "D1")
    assert kept.text == "Keep this."


async def test_a_reply_in_a_dm_thread_follows_up_over_the_whole_thread(bot, slack, llm_server):
    slack.add_dm("D1", "U1")
    first = slack.add_message("D1", "Our budget is 12k. How much is left after 5k?", user="U1")
    llm_server.sub_responder = lambda prompt: "7k is left."
    await bot.events.event(dm_message("D1", "Our budget is 12k. How much is left after 5k?", first))
    await bot.settle()
    llm_server.requests.clear()
    follow = slack.add_message("D1", "and after 2k more?", user="U1", thread_ts=first)
    await bot.events.event(dm_message("D1", "and after 2k more?", follow, thread_ts=first))
    await bot.settle()
    context = sub_prompts(llm_server)
    assert "Our budget is 12k." in context and "7k is left." in context
    runs = await bot.store.list_runs()
    assert [(r.trigger, r.thread_ts, r.status) for r in runs] == [
        ("dm", first, "finished"),
        ("dm", first, "finished"),
    ]
    assert all(
        t == first for t in {c.params.get("thread_ts") for c in slack.calls_to("chat.postMessage")}
    )


async def test_without_assistant_write_the_pane_still_answers(bot, slack, llm_server):
    slack.missing_scopes = {"assistant:write"}
    slack.add_message("C1", "The launch moved to Friday.", user="U2")
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="C1"))
    await bot.settle()
    await ask_in_pane(bot, slack, thread_ts, "When is the launch?")
    # Prompts and titles need assistant:write; setStatus takes chat:write as well.
    assert slack.suggested_prompts == [] and slack.pane_titles == []
    refused = [c.error for c in slack.calls if c.method.startswith("assistant.") and c.error]
    assert refused and set(refused) == {"missing_scope"}
    assert [s for _, _, s in slack.pane_statuses][-1] == ""
    [answer] = slack.posts("D1", thread_ts=thread_ts)
    assert answer.endswith(" s_")


async def test_a_follow_up_in_the_pane_sees_the_channel_and_the_earlier_answer(
    bot, slack, llm_server
):
    slack.add_message("C1", "Launch owner: Bob.", user="U2")
    thread_ts = open_pane(slack)
    await bot.events.event(thread_started("D1", thread_ts, viewing="C1"))
    await bot.settle()
    llm_server.sub_responder = lambda prompt: "Bob owns the launch."
    await ask_in_pane(bot, slack, thread_ts, "Who owns the launch?")
    llm_server.requests.clear()
    await ask_in_pane(bot, slack, thread_ts, "What else does he own?")
    context = sub_prompts(llm_server)
    assert "Launch owner: Bob." in context  # the channel in view
    assert "Bob owns the launch." in context and "Who owns the launch?" in context
    assert "What else does he own?" not in context  # the question is not its own context
    assert len(slack.posts("D1", thread_ts=thread_ts)) == 2
    assert slack.pane_titles == [("D1", thread_ts, "Who owns the launch?")]  # named once


async def test_membership_of_a_large_channel_is_read_200_a_page(bot, slack, llm_server):
    slack.add_message("C1", "Plans for everyone.", user="U2")
    crowd = [f"U{n:04d}X" for n in range(449)]
    slack.set_members("C1", [*crowd[:200], BOT_USER, *crowd[200:]])  # 450 members
    for user in crowd:
        slack.add_user(user, f"Member {user}")
    slack.add_dm("D9", crowd[-1])
    thread_ts = slack.add_message(
        "D9", "", user=BOT_USER, bot_id=BOT_ID, subtype="assistant_app_thread"
    )
    await bot.events.event(thread_started("D9", thread_ts, viewing="C1", user=crowd[-1]))
    await bot.settle()
    ts = slack.add_message("D9", "Summarize this channel", user=crowd[-1], thread_ts=thread_ts)
    await bot.events.event(
        dm_message("D9", "Summarize this channel", ts, user=crowd[-1], thread_ts=thread_ts)
    )
    await bot.settle()

    pages = slack.calls_to("conversations.members")
    assert [int(c.params["limit"]) for c in pages] == [200, 200, 200]  # the last one on page 3
    assert [bool(c.params.get("cursor")) for c in pages] == [False, True, True]
    assert "Plans for everyone." in sub_prompts(llm_server)


def test_the_loopback_slack_refuses_what_slack_refuses_for_members(slack):
    import asyncio

    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient
    from slack_server import BOT_TOKEN

    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)

    async def error(**params) -> str:
        try:
            await client.conversations_members(channel="C1", **params)
        except SlackApiError as exc:
            return str(exc.response["error"])
        return "ok"

    async def check() -> None:
        assert await error(limit=1000) == "invalid_limit"
        assert await error(limit=999) == "ok"
        assert await error(cursor="not-a-cursor") == "invalid_cursor"

    asyncio.run(check())
