"""`rlm-bot`: read settings, migrate the database, then serve Slack in Socket Mode or HTTP.
`rlm-bot migrate` and `rlm-bot check` are the operator's commands (bot/ops/cli.py).

Bad settings stop it before anything starts, with one line naming the variable; so does a
database it cannot reach or migrate, a bot token Slack refuses, and an RLM_ENCRYPTION_KEY that
cannot decrypt the workspace tokens stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from bot.settings import Settings, SettingsError

if TYPE_CHECKING:
    from bot.slack.api import SlackPoster

logger = logging.getLogger("bot")


class StartupError(Exception):
    """The app could not start; the message is one line for the operator."""


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the app until `stop` is set (by default: on SIGINT or SIGTERM); `StartupError` if
    it cannot start."""
    # Logging is set up before anything that logs as it is imported (alembic does), and the
    # sandbox is proved before anything else is opened, so a machine that cannot isolate is
    # refused with one line and nothing else.
    from bot.ops.logs import configure_logging

    configure_logging(settings.rlm_log_level, settings.secrets, log_format=settings.rlm_log_format)
    from bot.ops.isolation import SandboxUnavailable, check_sandbox, sandbox_limits

    try:
        isolation = await check_sandbox(
            sandbox_limits(
                settings.rlm_sandbox,
                settings.rlm_require_sandbox,
                database_url=settings.database_url,
                packages=settings.sandbox_packages,
            )
        )
    except SandboxUnavailable as exc:
        raise StartupError(str(exc)) from None
    # Imported here, after the settings are known good: the provider SDKs take seconds to
    # import, and a missing variable should be reported at once.
    from bot.app import EVENTS_PATH, build_app, readiness_of, serve_http, start_services
    from rlm import ConfigurationError

    try:
        services = await start_services(settings, isolation=isolation)
    except ConfigurationError as exc:
        raise StartupError(str(exc)) from None
    except ValueError as exc:  # an unusable DATABASE_URL, unreachable, or not migratable;
        # Redis unreachable; an RLM_ENCRYPTION_KEY that cannot read the stored tokens
        raise StartupError(str(exc)) from None
    try:
        if settings.slack_bot_token:  # with OAuth alone, tokens come per workspace
            await _check_slack_token(services.poster, settings.slack_api_url)
    except BaseException:
        await services.close()
        raise
    app = build_app(services)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    try:
        if settings.socket_mode:
            from bot.ops.socket_mode import CheckedSocketModeHandler

            # Socket Mode has no HTTP server of its own: a small listener serves health,
            # readiness, metrics and, with OAuth, the install pages.
            pages = await _serve_listener(settings, app, readiness_of(services))
            try:
                handler = CheckedSocketModeHandler(app, settings.slack_app_token)
                await handler.connect_async()  # type: ignore[no-untyped-call]
                logger.info("connected to Slack in Socket Mode")
                await stop.wait()
            finally:
                await pages.cleanup()
            await handler.close_async()  # type: ignore[no-untyped-call]
            await _finish(services, settings.rlm_shutdown_grace_seconds)
        else:
            server = await serve_http(
                app,
                host=settings.rlm_http_host,
                port=settings.port,
                max_request_bytes=settings.rlm_max_request_bytes,
                readiness=readiness_of(services),
            )
            logger.info("listening on port %d at %s", server.port, EVENTS_PATH)
            await stop.wait()
            await server.close()
            await _finish(services, settings.rlm_shutdown_grace_seconds)
    finally:
        logger.info("shutting down")
        await services.close()


async def _serve_listener(settings: Settings, app: Any, readiness: Any) -> Any:
    """Socket Mode's listener on RLM_INSTALL_PORT (or PORT); StartupError if it cannot bind."""
    from bot.ops.health import serve_health

    routes = []
    if app.oauth_flow is not None:
        from bot.workspaces.installs import oauth_routes

        routes = oauth_routes(app.oauth_flow)
    port = settings.rlm_install_port if settings.rlm_install_port is not None else settings.port
    try:
        runner = await serve_health(
            readiness, host=settings.rlm_http_host, port=port, extra_routes=routes
        )
    except OSError as exc:
        raise StartupError(
            f"the health listener could not listen on port {port} ({exc.strerror}): set "
            "RLM_INSTALL_PORT (or PORT) to a free port."
        ) from None
    bound = int(runner.addresses[0][1])
    logger.info("health, readiness and metrics on port %d (/healthz, /readyz, /metrics)", bound)
    if app.oauth_flow is not None:
        logger.info("install pages at %s", app.oauth_flow.install_path)
    return runner


async def _check_slack_token(poster: SlackPoster, api_url: str) -> None:
    """Ask Slack who we are (auth.test) before serving: a refused token stops the start."""
    import aiohttp
    from slack_sdk.errors import SlackApiError

    try:
        await poster.identity()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        raise StartupError(
            f"Slack refused SLACK_BOT_TOKEN ({error}): set it to the Bot User OAuth Token "
            "(OAuth & Permissions), reinstalling the app if it was revoked."
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise StartupError(
            f"Slack could not be reached at {api_url} ({type(exc).__name__}): check "
            "SLACK_API_URL and the network."
        ) from None


async def _finish(services: Any, grace: float) -> None:
    """Taking no new work now, let the runs under way end within `grace` seconds."""
    logger.info("stopping: runs under way have %.0f s to finish", grace)
    left = await services.finish(grace)
    if left:
        logger.info("%d task(s) still going after the grace period: interrupting them", left)


def main(argv: list[str] | None = None) -> None:
    from bot.ops.cli import build_parser, run_command

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is not None:
        sys.exit(run_command(args))
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"rlm-bot: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=settings.rlm_log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"rlm-bot: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
