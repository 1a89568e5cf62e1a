"""The worker's filesystem is an allowlist: it lists exactly what `rlm.repl._view` computes,
under bwrap and under unshare, and nothing planted elsewhere on the host is readable.

The layouts the app is installed in (checkouts under /usr/src and /opt, a venv that is the
app's directory, a wheel in site-packages) are walked the same way in test_host_layouts.py.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm import ConfigurationError
from rlm.repl import REPLSession, SandboxLimits
from rlm.repl._sandbox import WORKER_FILES
from rlm.repl._view import worker_view
from tests.security.attacks import ISOLATED, skip_unless_available
from tests.security.views import WALK_CELL, expected_paths, walked

MAX_VISIBLE_FILES = 2000
PURE_PACKAGE, EXTENSION_PACKAGE = "idna", "orjson"  # both installed with the app's deps


async def _nothing(*args: object) -> str:
    return ""


def _session(method: str, packages: tuple[str, ...] = ()) -> REPLSession:
    limits = SandboxLimits(isolation=method, require_isolation=True, packages=packages)
    return REPLSession("ctx", llm_query=_nothing, parallel_query=_nothing, limits=limits)


@pytest.mark.parametrize("method", ISOLATED)
async def test_the_worker_sees_exactly_the_allowlist(method: str) -> None:
    skip_unless_available(method)
    async with _session(method) as repl:
        result = await repl.run_cell(WALK_CELL)
        assert repl.workdir is not None
        expected = expected_paths(repl.workdir)
    assert not result.error, result.output[-2000:]
    seen, files = walked(result.output)
    print(f"{method}: {files} files visible to the worker ({len(seen)} paths)")
    assert sorted(seen - expected) == [], "visible but not on the allowlist"
    assert sorted(expected - seen) == [], "on the allowlist but missing"
    assert files < MAX_VISIBLE_FILES


def test_the_allowlist_holds_no_host_tree() -> None:
    """Read without starting anything: no venv, no site-packages, nothing of /etc but the
    two files made for the worker, nothing of /opt, /srv, /home, /var."""
    view = worker_view(WORKER_FILES, workdir="/tmp/rlm-repl-0-x", uid=12345)
    paths = [e[-1] for e in view.entries]
    assert [p for p in paths if p.startswith("/etc/")] == ["/etc/group", "/etc/passwd"]
    assert not [p for p in paths if p.split("/")[1] in ("opt", "srv", "home", "var", "mnt")]
    assert not [p for p in paths if "site-packages" in p or "dist-packages" in p]
    assert not [p for p in paths if "/.venv/" in p or p.endswith("/.venv")]
    assert ["bind", "/usr", "/usr"] not in view.entries
    assert view.sys_path == []


@pytest.fixture
def planted() -> Iterator[list[Path]]:
    """Secrets of other apps on the machine, where the issue's attacker found them."""
    tag = uuid.uuid4().hex[:12]
    app, share = Path(f"/usr/local/src/rlm-other-{tag}"), Path(f"/usr/share/rlm-other-{tag}")
    try:
        (app / ".git").mkdir(parents=True)
        share.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"PLANTED SECRETS NOT TESTED: cannot write under /usr ({exc})")
    files = [app / ".env", share / "config.ini", app / ".git" / "config"]
    files[0].write_text(f"API_KEY=sk-planted-{tag}\n")
    files[1].write_text(f"password = planted-{tag}\n")
    files[2].write_text(f'[remote "origin"]\n\turl = https://x:ghp_planted{tag}@example.com/r\n')
    for path in files:
        path.chmod(0o644)
    try:
        yield files
    finally:
        shutil.rmtree(app, ignore_errors=True)
        shutil.rmtree(share, ignore_errors=True)


@pytest.mark.parametrize("method", ISOLATED)
async def test_planted_secrets_elsewhere_are_not_readable(method: str, planted: list[Path]) -> None:
    skip_unless_available(method)
    reads = "\n".join(
        f"try:\n    print(open({str(p)!r}).read())\nexcept OSError as e:\n"
        f"    print(type(e).__name__)"
        for p in planted
    )
    async with _session(method) as repl:
        result = await repl.run_cell(reads)
    assert result.output.splitlines() == ["FileNotFoundError"] * len(planted), result.output


@pytest.mark.parametrize("method", ISOLATED)
async def test_named_packages_and_only_those_are_importable(method: str) -> None:
    skip_unless_available(method)
    packages = (PURE_PACKAGE, EXTENSION_PACKAGE)
    code = (
        "import idna, orjson\n"
        "print(idna.encode('bücher.example').decode(), orjson.dumps({'a': 1}).decode())\n"
        "try:\n    import pydantic_core\nexcept ImportError:\n    print('not named, not there')"
    )
    async with _session(method, packages) as repl:
        result = await repl.run_cell(code)
        walk = await repl.run_cell(WALK_CELL)
        assert repl.workdir is not None
        expected = expected_paths(repl.workdir, packages)
    assert result.output.splitlines() == [
        'xn--bcher-kva.example {"a":1}',
        "not named, not there",
    ], result.output
    seen, _ = walked(walk.output)
    assert sorted(seen ^ expected) == []


def test_an_unknown_package_is_refused_at_once() -> None:
    with pytest.raises(ConfigurationError, match="no-such-dist-rlm"):
        SandboxLimits(packages=("no-such-dist-rlm",))


def test_the_bot_setting_names_the_packages_and_refuses_unknown_ones() -> None:
    from pydantic import ValidationError

    from bot.ops.isolation import sandbox_limits
    from bot.settings import Settings

    required = {"slack_bot_token": "xoxb-x", "slack_signing_secret": "s"}
    settings = Settings(_env_file=None, rlm_sandbox_packages=" idna, orjson ", **required)  # type: ignore[call-arg]
    assert settings.sandbox_packages == ("idna", "orjson")
    limits = sandbox_limits("auto", False, packages=settings.sandbox_packages)
    assert limits.packages == ("idna", "orjson")
    with pytest.raises(ValidationError, match="no-such-dist-rlm"):
        Settings(_env_file=None, rlm_sandbox_packages="idna,no-such-dist-rlm", **required)  # type: ignore[call-arg]


def test_links_on_the_way_stay_links_under_bwrap() -> None:
    """Each symlink met on the way to a library (such as /lib64 -> usr/lib64) is made as a
    link in the view, and every bind is read-only."""
    from rlm.repl._sandbox import bwrap_view_args
    from rlm.repl._view import interpreter, route, shared_libraries

    view = worker_view(WORKER_FILES, workdir="/tmp/rlm-repl-0-x", uid=12345)
    args = bwrap_view_args(view)
    for library in shared_libraries([interpreter()]):
        links, real = route(library)
        for _, target, path in links:
            at = args.index(path)
            assert args[at - 2 : at] == ["--symlink", target]
        at = args.index(real, args.index(real) + 1)  # source, then destination
        assert args[at - 2] == "--ro-bind"
    assert "--bind" not in args
