"""The worker's seccomp filter, installed in fresh interpreters (never in pytest's own process,
since a filter cannot be removed): what it refuses, what still works, and the program itself."""

from __future__ import annotations

import errno
import importlib.util
import json
import platform
import re
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

MODULE = Path(__file__).resolve().parents[2] / "rlm" / "repl" / "_seccomp.py"
MACHINE = platform.machine()

# Written out again rather than read from the module, so a wrong number there cannot hide here.
NUMBERS = {
    "x86_64": {
        "clone": 56,
        "clone3": 435,
        "io_uring_setup": 425,
        "add_key": 248,
        "keyctl": 250,
        "bpf": 321,
        "perf_event_open": 298,
        "process_vm_readv": 310,
        "userfaultfd": 323,
        "fsopen": 430,
        "getpid": 39,
    },
    "aarch64": {
        "clone": 220,
        "clone3": 435,
        "io_uring_setup": 425,
        "add_key": 217,
        "keyctl": 219,
        "bpf": 280,
        "perf_event_open": 241,
        "process_vm_readv": 270,
        "userfaultfd": 282,
        "fsopen": 430,
        "getpid": 172,
    },
}

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or MACHINE not in NUMBERS,
    reason="the seccomp filter is written for Linux on x86_64 and aarch64",
)

# Runs in the child: argv carries the module path, syscall numbers and options.
PRELUDE = """
import ctypes, errno, importlib.util, json, os, sys
module_path, NR, OPTIONS = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
spec = importlib.util.spec_from_file_location("_seccomp", module_path)
seccomp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seccomp)
if OPTIONS.get("drop_privileges") and os.getuid() == 0:
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except PermissionError:
        pass  # root without capabilities is unprivileged already
if OPTIONS.get("no_new_privs", True) and libc.prctl(38, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
if OPTIONS.get("install", True):
    seccomp.install_filter()

def outcome(result):
    return "ok" if result != -1 else errno.errorcode[ctypes.get_errno()]

def syscall(name, *args):
    ctypes.set_errno(0)
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return libc.syscall(ctypes.c_long(NR[name]), *args)

def emit(value):
    print(json.dumps(value), flush=True)
"""


def run_child(body: str, **options: Any) -> subprocess.CompletedProcess[str]:
    script = PRELUDE + textwrap.dedent(body)
    argv = [str(MODULE), json.dumps(NUMBERS[MACHINE]), json.dumps(options)]
    return subprocess.run(
        [sys.executable, "-I", "-c", script, *argv], capture_output=True, text=True, timeout=60
    )


def child_result(body: str, **options: Any) -> Any:
    proc = run_child(body, **options)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def load_module() -> ModuleType:
    """The module itself, for its pure parts; importing it installs nothing."""
    spec = importlib.util.spec_from_file_location("_seccomp_under_test", MODULE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def already_filtered() -> bool:
    status = Path("/proc/self/status").read_text()
    return re.search(r"^Seccomp:\s*0$", status, re.MULTILINE) is None


# -- what the filter refuses ------------------------------------------------------------------

PROBES = """
CLONE_NEWNS, CLONE_NEWUSER, SIGCHLD = 0x20000, 0x10000000, 17
results = {}

def raw_clone(flags):
    pid = syscall("clone", flags, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)  # the filter let it through: leave the child at once
    if pid > 0:
        os.waitpid(pid, 0)
    return outcome(pid)

def closing(fd):
    if fd >= 0:
        os.close(fd)
    return outcome(fd)

# clone first: after an unshare(CLONE_NEWUSER) it would fail on its own.
results["clone(CLONE_NEWUSER)"] = raw_clone(CLONE_NEWUSER | SIGCHLD)
results["unshare(CLONE_NEWUSER)"] = outcome(libc.unshare(CLONE_NEWUSER))
# Should the filter fail, the mount below lands in this private namespace.
results["unshare(CLONE_NEWNS)"] = outcome(libc.unshare(CLONE_NEWNS))
results["clone3"] = outcome(syscall("clone3", None, 0))
target = OPTIONS["mount_target"].encode()
mounted = libc.mount(b"none", target, b"tmpfs", 0, None)
if mounted == 0:
    libc.umount2(target, 2)
results["mount"] = outcome(mounted)
results["umount2"] = outcome(libc.umount2(b"/nonexistent-rlm-seccomp", 0))
results["chroot"] = outcome(libc.chroot(b"/"))
results["setns"] = outcome(libc.setns(-1, 0))
results["fsopen"] = closing(syscall("fsopen", b"tmpfs", 0))
params = ctypes.create_string_buffer(120)
results["io_uring_setup"] = closing(syscall("io_uring_setup", 1, ctypes.byref(params)))
results["add_key"] = outcome(syscall("add_key", b"user", b"rlm-seccomp", b"x", 1, -2))
results["keyctl"] = outcome(syscall("keyctl", 0, -2, 0))
results["bpf"] = outcome(syscall("bpf", 0, None, 0))
results["perf_event_open"] = closing(syscall("perf_event_open", None, 0, -1, -1, 0))
results["process_vm_readv"] = outcome(syscall("process_vm_readv", os.getpid(), None, 0, None, 0, 0))
results["userfaultfd"] = closing(syscall("userfaultfd", 1))  # UFFD_USER_MODE_ONLY
# Last: had it worked, this process would be traced by pytest until it exits.
results["ptrace(PTRACE_TRACEME)"] = outcome(libc.ptrace(0, 0, None, None))
emit(results)
"""

REFUSED = {
    "unshare(CLONE_NEWUSER)": "EPERM",
    "unshare(CLONE_NEWNS)": "EPERM",
    "clone(CLONE_NEWUSER)": "EPERM",
    "clone3": "ENOSYS",
    "mount": "EPERM",
    "umount2": "EPERM",
    "chroot": "EPERM",
    "setns": "EPERM",
    "fsopen": "EPERM",
    "io_uring_setup": "EPERM",
    "add_key": "EPERM",
    "keyctl": "EPERM",
    "bpf": "EPERM",
    "perf_event_open": "EPERM",
    "process_vm_readv": "EPERM",
    "userfaultfd": "EPERM",
    "ptrace(PTRACE_TRACEME)": "EPERM",
}


@pytest.fixture(scope="module")
def refused() -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="rlm-seccomp-") as target:
        results: dict[str, str] = child_result(PROBES, mount_target=target)
    return results


@pytest.mark.parametrize("call", sorted(REFUSED))
def test_the_filter_refuses(refused: dict[str, str], call: str) -> None:
    assert refused[call] == REFUSED[call]


def test_without_the_filter_the_same_calls_fail_differently() -> None:
    """setns(-1) and clone3(NULL, 0) are bad arguments: EPERM/ENOSYS above came from the filter."""
    if already_filtered():
        pytest.skip("this test process already runs under a seccomp filter")
    body = """
    emit({"setns": outcome(libc.setns(-1, 0)), "clone3": outcome(syscall("clone3", None, 0))})
    """
    assert child_result(body, install=False) == {"setns": "EBADF", "clone3": "EINVAL"}


@pytest.mark.skipif(MACHINE != "x86_64", reason="x32 exists only on x86_64")
def test_x32_syscalls_are_refused() -> None:
    body = """emit(outcome(libc.syscall(ctypes.c_long(0x40000000 | NR["getpid"]))))"""
    assert child_result(body) == "EPERM"


@pytest.mark.skipif(MACHINE != "x86_64", reason="int 0x80 is the x86 32-bit entry")
def test_the_i386_abi_kills_the_process() -> None:
    body = """
    import mmap
    # mov eax, 20 (i386 getpid); int 0x80; ret
    code = b"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3"
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    emit(ctypes.CFUNCTYPE(ctypes.c_int)(address)())
    """
    control = run_child(body, install=False)
    if control.returncode != 0 or already_filtered():
        pytest.skip("this kernel runs no i386 syscalls from a 64-bit process")
    assert run_child(body).returncode == -signal.SIGSYS


def test_without_no_new_privs_an_unprivileged_process_is_told_why() -> None:
    body = """
    try:
        seccomp.install_filter()
    except OSError as error:
        emit([errno.errorcode[error.errno], str(error)])
    else:
        emit(["installed", ""])
    """
    code, message = child_result(body, install=False, no_new_privs=False, drop_privileges=True)
    assert code == "EACCES"
    assert "no_new_privs" in message


def test_an_unknown_machine_is_reported_not_filtered() -> None:
    body = """
    import platform
    platform.machine = lambda: "riscv64"
    try:
        seccomp.install_filter()
    except OSError as error:
        emit([errno.errorcode[error.errno], str(error)])
    """
    code, message = child_result(body, install=False)
    assert code == "ENOTSUP" or code == "EOPNOTSUPP"
    assert "riscv64" in message


# -- what still works under it ----------------------------------------------------------------

EVERYDAY = """
import socket, subprocess, threading
results = {}

pid = os.fork()
if pid == 0:
    os._exit(7)
results["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

seen = []
thread = threading.Thread(target=seen.append, args=("ran",))
thread.start()
thread.join()
results["thread"] = seen

results["subprocess"] = subprocess.run(["true"]).returncode

left, right = socket.socketpair()
left.sendall(b"ping")
results["socketpair"] = right.recv(4).decode()
left.close()
right.close()

with open(module_path, encoding="utf-8") as handle:
    results["read"] = "install_filter" in handle.read()

child = subprocess.run(
    [sys.executable, "-I", "-c",
     "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
     "print(libc.unshare(0x10000000), ctypes.get_errno())"],
    capture_output=True, text=True,
)
results["python child"] = [child.returncode, child.stdout.split()]

if os.path.exists("/usr/bin/unshare"):
    results["unshare --user"] = subprocess.run(
        ["/usr/bin/unshare", "--user", "true"], capture_output=True
    ).returncode != 0
emit(results)
"""

STILL_WORKS = {
    "fork": 7,
    "thread": ["ran"],
    "subprocess": 0,
    "socketpair": "ping",
    "read": True,
    "python child": [0, ["-1", str(errno.EPERM)]],  # runs, and inherits the filter
    "unshare --user": True,
}


@pytest.fixture(scope="module")
def everyday() -> dict[str, Any]:
    results: dict[str, Any] = child_result(EVERYDAY)
    return results


@pytest.mark.parametrize("work", sorted(STILL_WORKS))
def test_ordinary_work_still_succeeds(everyday: dict[str, Any], work: str) -> None:
    if work == "unshare --user" and not Path("/usr/bin/unshare").exists():
        pytest.skip("no /usr/bin/unshare here")
    assert everyday[work] == STILL_WORKS[work]


# -- the program itself -----------------------------------------------------------------------

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS


def evaluate(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """What the kernel would return for one syscall, by running the classic BPF by hand."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    code = list(struct.iter_unpack("=HBBI", program))
    pc, accumulator = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:
            (accumulator,) = struct.unpack_from("<I", data, k)
        elif op == 0x06:
            return k
        else:
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: accumulator & k != 0}
            pc += jt if taken[op] else jf


@pytest.mark.parametrize("machine", sorted(NUMBERS))
def test_the_program_fits_the_kernel_limits(machine: str) -> None:
    program = load_module().build_filter(machine)
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 < 4096


@pytest.mark.parametrize("machine", sorted(NUMBERS))
def test_the_program_decides_as_intended(machine: str) -> None:
    seccomp = load_module()
    program, arch, nr = seccomp.build_filter(machine), AUDIT_ARCH[machine], NUMBERS[machine]
    for number in seccomp._ARCHES[machine].blocked:
        assert evaluate(program, arch, number) == EPERM
    assert evaluate(program, arch, nr["clone3"]) == ENOSYS
    assert evaluate(program, arch, nr["clone"], 0x10000000 | 17) == EPERM
    assert evaluate(program, arch, nr["clone"], 0x80) == EPERM  # CLONE_NEWTIME
    assert evaluate(program, arch, nr["clone"], 0x01200011) == SECCOMP_RET_ALLOW  # fork
    assert evaluate(program, arch, nr["getpid"]) == SECCOMP_RET_ALLOW
    assert evaluate(program, 0x40000003, nr["getpid"]) == SECCOMP_RET_KILL_PROCESS  # i386
    if machine == "x86_64":
        assert evaluate(program, arch, 0x40000000 | nr["getpid"]) == EPERM


def test_an_unknown_machine_raises() -> None:
    with pytest.raises(OSError, match="riscv64"):
        load_module().build_filter("riscv64")


def test_blocked_names_the_refused_calls() -> None:
    blocked = load_module().BLOCKED
    assert len(set(blocked)) == len(blocked)
    assert {"mount", "unshare", "setns", "io_uring_setup", "ptrace", "bpf", "keyctl"} <= set(
        blocked
    )


HEADERS = {
    "x86_64": [
        Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
        Path("/usr/include/asm/unistd_64.h"),
    ],
    "aarch64": [Path("/usr/include/asm-generic/unistd.h")],
}


@pytest.mark.parametrize("machine", sorted(HEADERS))
def test_syscall_numbers_match_the_kernel_headers(machine: str) -> None:
    header = next((path for path in HEADERS[machine] if path.exists()), None)
    if header is None:
        pytest.skip(f"no kernel headers for {machine} here")
    defined = {
        name: int(number)
        for name, number in re.findall(
            r"^#define __NR(?:3264)?_(\w+)\s+(\d+)$", header.read_text(), re.MULTILINE
        )
    }
    seccomp = load_module()
    arch = seccomp._ARCHES[machine]
    checked = 0
    for name, number in [*zip(seccomp.BLOCKED, arch.blocked, strict=True), ("clone", arch.clone)]:
        if name in defined:  # older headers lack the newest calls
            assert number == defined[name], name
            checked += 1
    assert checked >= 30
    assert arch.clone3 == defined.get("clone3", arch.clone3)
    assert arch.seccomp == defined["seccomp"]
