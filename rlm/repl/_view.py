"""What the REPL worker's filesystem holds: an explicit allowlist, the same under every method.

The worker sees the base interpreter (not the venv's), its standard library (without its
tests, GUI, installer and `site-packages`, and with one bytecode level), `lib-dynload`, the
shared libraries all of those load, the worker's own files, a minimal `/etc` (one passwd and
one group line for its uid), four device nodes, a fresh `/proc` and its own tmpfs; and, if an
operator names them, the files of some installed distributions. Nothing else of the host
exists for it.

The view is a list of entries, each a JSON-ready list, in the order they must be made:
`["dir", path]`, `["symlink", target, path]`, `["bind", source, path]` (read-only) and
`["dev", path]` (a device node, bound from the host's). `_sandbox` turns it into bwrap's
arguments; under unshare the worker builds it itself (`_rootfs.py`). The functions here only
read the host (and, once per process, lay out a private copy of the standard library), so a
test can compute what the worker must see without starting one.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlm._exceptions import ConfigurationError

MSG_UNKNOWN_PACKAGE = (
    "The REPL sandbox was asked to show the distribution {name!r} to generated code, but it "
    "is not installed in this environment; install it or remove it from the sandbox packages."
)
MSG_NO_LDD = "ldd is not installed, so the libraries the interpreter loads cannot be listed"

DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")

# Parts of the standard library generated code has no use for: tests, GUI, installers, the
# build configuration, and where third-party packages go.
_STDLIB_SKIP_TOP = ("idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "turtle.py")
_STDLIB_SKIP_ANYWHERE = ("test", "tests", "site-packages", "dist-packages")
_STDLIB_SKIP_PREFIXES = ("config-",)
# Extension modules for terminals, GUIs, system databases and tests: each pulls in shared
# libraries (ncurses, X11, Kerberos through NIS...) that every worker start would bind.
_DYNLOAD_SKIP = re.compile(
    r"(_tkinter|_test|_ctypes_test|_xxtestfuzz|xxlimited|xxsubtype|readline|_curses|nis|"
    r"_dbm|_gdbm|spwd|ossaudiodev|_crypt|_uuid)"
)
# Only the bytecode a plain (not -O) interpreter reads: one level, not three.
_OTHER_OPT_LEVELS = re.compile(r"\.opt-\d\.pyc$")

_SYSTEM_LIBRARY_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64")

Entry = list[str]


@dataclass(frozen=True)
class View:
    """The worker's filesystem, what it puts on sys.path, and the environment it needs."""

    entries: list[Entry]
    sys_path: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


_lock = threading.RLock()
_cache: dict[tuple[int, object], object] = {}  # once per process (a fork computes anew)


def _once(key: object, make: object) -> object:
    with _lock:
        full = (os.getpid(), key)
        if full not in _cache:
            _cache[full] = make() if callable(make) else make
        return _cache[full]


def interpreter() -> str:
    """The base interpreter's real path: what the worker runs, with no venv around it."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return os.path.realpath(base)


def stdlib_dirs() -> list[str]:
    """The base interpreter's standard library directories (pure, and the one holding
    lib-dynload), real paths; a venv's sysconfig would name its own."""
    found = {os.path.realpath(os.path.dirname(os.__file__)), os.path.dirname(_lib_dynload())}
    return sorted(p for p in found if os.path.isdir(p))


def _lib_dynload() -> str:
    dest = sysconfig.get_config_var("DESTSHARED")
    return os.path.realpath(dest or os.path.join(os.path.dirname(os.__file__), "lib-dynload"))


def _stdlib_wanted(relative: str, is_dir: bool) -> bool:
    parts = relative.split(os.sep)
    if parts[0] in _STDLIB_SKIP_TOP or parts[0].startswith(_STDLIB_SKIP_PREFIXES):
        return False
    if is_dir and parts[-1] in _STDLIB_SKIP_ANYWHERE:
        return False
    name = parts[-1]
    if _OTHER_OPT_LEVELS.search(name):
        return False
    if name.endswith(".pyc") and sys.implementation.cache_tag not in name:
        return False
    return not (parts[0] == "lib-dynload" and _DYNLOAD_SKIP.match(name))


def stdlib_files(stdlib: str) -> Iterator[tuple[str, bool]]:
    """(relative path, is a directory) of what the worker's copy of `stdlib` holds."""
    for top, dirs, files in os.walk(stdlib):
        rel_top = os.path.relpath(top, stdlib)
        kept = []
        for name in sorted(dirs):
            rel = os.path.normpath(os.path.join(rel_top, name))
            path = os.path.join(top, name)
            if _stdlib_wanted(rel, True):
                if os.path.islink(path):
                    yield rel, False
                else:
                    kept.append(name)
                    yield rel, True
        dirs[:] = kept
        for name in sorted(files):
            rel = os.path.normpath(os.path.join(rel_top, name))
            if _stdlib_wanted(rel, False):
                yield rel, False


def _copy_stdlib(stdlib: str, into: str) -> None:
    """`into` becomes the worker's copy of `stdlib`: hard links where the filesystem allows
    (no space, same inodes), copies otherwise; modification times kept, so the bytecode
    still matches its sources."""
    os.mkdir(into, 0o755)
    os.chmod(into, 0o755)
    for rel, is_dir in stdlib_files(stdlib):
        source, target = os.path.join(stdlib, rel), os.path.join(into, rel)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif is_dir:
            os.mkdir(target)
            os.chmod(target, 0o755)
        else:
            try:
                os.link(source, target)
            except OSError:  # another filesystem, or files of another user (protected_hardlinks)
                shutil.copy2(source, target)


def _private_dir() -> str:
    """A directory of this process's own (removed at exit, or by `remove_stale_workdirs`
    once the process is gone), for what the view binds that the host does not have as is."""

    def make() -> str:
        path = tempfile.mkdtemp(prefix=f"rlm-repl-{os.getpid()}-view-")
        atexit.register(shutil.rmtree, path, True)
        return path

    return str(_once("private", make))


def stdlib_copy(stdlib: str) -> str:
    """The worker's copy of `stdlib`, laid out once per process."""

    def make() -> str:
        into = os.path.join(_private_dir(), "stdlib-" + str(len(_cache)))
        _copy_stdlib(stdlib, into)
        return into

    return str(_once(("stdlib", stdlib), make))


def etc_files(uid: int) -> dict[str, str]:
    """/etc/passwd and /etc/group for the worker's uid: one line each, nothing else."""

    def make() -> dict[str, str]:
        etc = os.path.join(_private_dir(), f"etc-{uid}")
        os.mkdir(etc, 0o755)
        os.chmod(etc, 0o755)
        lines = {
            "passwd": f"sandbox:x:{uid}:{uid}:sandbox:/:/nonexistent\n",
            "group": f"sandbox:x:{uid}:\n",
        }
        found = {}
        for name, line in lines.items():
            path = os.path.join(etc, name)
            with open(path, "w", encoding="ascii") as f:
                f.write(line)
            os.chmod(path, 0o644)
            found["/etc/" + name] = path
        return found

    files: dict[str, str] = _once(("etc", uid), make)  # type: ignore[assignment]
    return files


_LDD_PATH = re.compile(r"(?:=>\s*|^\s+)(/[^\s]+)\s+\(0x", re.MULTILINE)


def shared_libraries(objects: Sequence[str]) -> list[str]:
    """The shared libraries `objects` load (the dynamic loader included), as the loader
    finds them, by ldd; each object is asked about once per process."""
    todo = [o for o in objects if ("ldd", o) not in _cache_keys()]
    if todo:
        ldd = shutil.which("ldd")
        if ldd is None:
            raise OSError(MSG_NO_LDD)
        for start in range(0, len(todo), 200):
            batch = todo[start : start + 200]
            done = subprocess.run(
                [ldd, *batch],
                capture_output=True,
                text=True,
                check=False,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            )
            # With several objects, ldd heads each one's list with "object:".
            sections = re.split(r"^(/[^\n]*):\n", done.stdout, flags=re.MULTILINE)
            if len(batch) == 1:
                found = {batch[0]: done.stdout}
            else:
                found = dict(zip(sections[1::2], sections[2::2], strict=False))
            for path in batch:
                libs = sorted(set(_LDD_PATH.findall(found.get(path, ""))))
                _once(("ldd", path), libs)
    result: set[str] = set()
    for path in objects:
        result.update(_once(("ldd", path), []))  # type: ignore[arg-type]
    return sorted(result)


def _cache_keys() -> set[object]:
    with _lock:
        return {key for pid, key in _cache if pid == os.getpid()}


def route(path: str) -> tuple[list[Entry], str]:
    """The symlinks met on the way to `path` (each as a symlink entry) and the real path it
    leads to, so a link such as /lib64 -> usr/lib64 exists in the view as a link."""
    links: list[Entry] = []
    parts = Path(os.path.normpath(path)).parts[1:]
    done = "/"
    for _ in range(64):
        if not parts:
            return links, done
        here = os.path.join(done, parts[0])
        if os.path.islink(here):
            target = os.readlink(here)
            links.append(["symlink", target, here])
            joined = os.path.normpath(os.path.join(done, target, *parts[1:]))
            parts, done = Path(joined).parts[1:], "/"
        else:
            parts, done = parts[1:], here
    raise OSError(f"too many symbolic links on the way to {path}")


def check_packages(names: Iterable[str]) -> None:
    """ConfigurationError unless every name is an installed distribution."""
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigurationError(MSG_UNKNOWN_PACKAGE.format(name=name)) from None


def package_binds(names: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(paths to bind, directories for sys.path, extension modules) for the distributions
    `names`: each top-level entry of theirs in site-packages, whole when everything in it
    is theirs, else file by file."""
    paths: set[str] = set()
    roots: set[str] = set()
    extensions: set[str] = set()
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigurationError(MSG_UNKNOWN_PACKAGE.format(name=name)) from None
        root = os.path.realpath(str(dist.locate_file("")))
        roots.add(root)
        owned: dict[str, set[str]] = {}
        for file in dist.files or ():
            path = os.path.normpath(os.path.join(root, str(file)))
            if not path.startswith(root + os.sep) or not os.path.isfile(path):
                continue  # console scripts and the like live outside site-packages
            top = os.path.relpath(path, root).split(os.sep)[0]
            owned.setdefault(top, set()).add(path)
            if path.endswith(".so") or ".so." in path:
                extensions.add(path)
        for top, files in owned.items():
            top_path = os.path.join(root, top)
            if os.path.isdir(top_path) and _all_owned(top_path, files):
                paths.add(top_path)
            else:
                paths.update(files)
    return sorted(paths), sorted(roots), sorted(extensions)


def _all_owned(top: str, files: set[str]) -> bool:
    for here, _, names in os.walk(top):
        for name in names:
            path = os.path.join(here, name)
            if path not in files and not name.endswith(".pyc"):
                return False
    return True


def worker_view(
    worker_files: Sequence[str], *, workdir: str, uid: int, packages: Sequence[str] = ()
) -> View:
    """The worker's whole filesystem but /proc and its tmpfs at `workdir`; computed once per
    process for each uid, package list and directory the worker directories are made in."""
    key = ("view", tuple(worker_files), os.path.dirname(workdir), uid, tuple(packages))
    view: View = _once(key, lambda: _worker_view(worker_files, workdir, uid, packages))  # type: ignore[assignment]
    return view


def _worker_view(
    worker_files: Sequence[str], workdir: str, uid: int, packages: Sequence[str]
) -> View:
    python = interpreter()
    dynload = _lib_dynload()
    binds: dict[str, str] = {python: python}  # view path -> host source
    stdlib = stdlib_dirs()
    for path in stdlib:
        binds[path] = stdlib_copy(path)
    objects = [python]
    for path in stdlib:
        if os.path.isdir(dynload) and dynload.startswith(path + os.sep):
            break
    else:  # lib-dynload lies outside the standard library (some distributions' layout)
        if os.path.isdir(dynload):
            binds[dynload] = dynload
    if os.path.isdir(dynload):
        objects += [
            os.path.join(dynload, n)
            for n in sorted(os.listdir(dynload))
            if n.endswith(".so") and _stdlib_wanted(os.path.join("lib-dynload", n), False)
        ]
    package_paths, sys_path, extensions = package_binds(packages)
    for path in package_paths:
        binds[path] = path
    links: list[Entry] = []
    libraries = shared_libraries([*objects, *extensions])
    library_dirs = []
    for lib in libraries:
        on_the_way, real = route(lib)
        links += on_the_way
        binds.setdefault(real, real)
        library_dirs.append(os.path.dirname(lib))
    for path in worker_files:
        real = os.path.realpath(path)
        binds[real] = real
    for view_path, source in etc_files(uid).items():
        binds[view_path] = source
    entries = _ordered(links, binds, workdir)
    # Without ld.so.cache the loader looks in its own system directories and the objects'
    # run paths; libraries found only through the cache need to be named.
    extra = sorted(set(library_dirs) - set(_system_library_dirs()))
    env = {"LD_LIBRARY_PATH": ":".join(extra)} if extra else {}
    return View(entries, sys_path, env)


def _system_library_dirs() -> list[str]:
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    found = list(_SYSTEM_LIBRARY_DIRS)
    if arch:
        found += [f"/lib/{arch}", f"/usr/lib/{arch}"]
    return found


def _ordered(links: list[Entry], binds: dict[str, str], workdir: str) -> list[Entry]:
    """Directories, then links, then binds and devices; nothing inside a bound directory."""
    bound_dirs = sorted(p for p, s in binds.items() if os.path.isdir(s))

    def under_bind(path: str) -> bool:
        return any(path.startswith(d + os.sep) for d in bound_dirs)

    unique_links = {e[2]: e for e in links if not under_bind(e[2])}
    kept = {p: s for p, s in binds.items() if not under_bind(p) and p not in unique_links}
    made = [*unique_links, *kept, *DEVICES, workdir, "/proc"]
    dirs = set()
    for path in made:
        parent = os.path.dirname(path)
        while parent != "/":
            dirs.add(parent)
            parent = os.path.dirname(parent)
    dirs -= set(unique_links)
    entries: list[Entry] = [["dir", d] for d in sorted(dirs | {"/proc"})]
    entries += [unique_links[p] for p in sorted(unique_links)]
    entries += [["bind", kept[p], p] for p in sorted(kept)]
    entries += [["dev", d] for d in DEVICES if os.path.exists(d)]
    return entries


def visible_paths(view: View, workdir: str) -> set[str]:
    """Every path the worker can list (not following links) but what /proc holds and what
    it writes into `workdir`: what a test walking the worker's / must find, exactly."""
    found = {"/", workdir}
    for entry in view.entries:
        found.add(entry[-1])
        if entry[0] == "bind" and os.path.isdir(entry[1]) and not os.path.islink(entry[1]):
            source, dest = entry[1], entry[2]
            for top, dirs, files in os.walk(source):
                for name in (*dirs, *files):
                    found.add(os.path.join(dest, os.path.relpath(os.path.join(top, name), source)))
    return found
