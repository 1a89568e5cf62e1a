"""A seccomp-BPF filter the REPL worker installs on itself: the system calls that reach the
kernel's attack surface (namespaces, mounts, io_uring, keys, ptrace, bpf) fail with EPERM.

Loaded inside the worker as a sibling module, so it imports nothing from `rlm`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from typing import NamedTuple

# (name, x86_64 number, aarch64 number); aarch64 uses the asm-generic table.
_SYSCALLS: tuple[tuple[str, int, int], ...] = (
    ("mount", 165, 40),
    ("umount2", 166, 39),
    ("pivot_root", 155, 41),
    ("chroot", 161, 51),
    ("unshare", 272, 97),
    ("setns", 308, 268),
    ("mount_setattr", 442, 442),
    ("open_tree", 428, 428),
    ("move_mount", 429, 429),
    ("fsopen", 430, 430),
    ("fsconfig", 431, 431),
    ("fsmount", 432, 432),
    ("fspick", 433, 433),
    ("io_uring_setup", 425, 425),
    ("io_uring_enter", 426, 426),
    ("io_uring_register", 427, 427),
    ("keyctl", 250, 219),
    ("add_key", 248, 217),
    ("request_key", 249, 218),
    ("ptrace", 101, 117),
    ("process_vm_readv", 310, 270),
    ("process_vm_writev", 311, 271),
    ("bpf", 321, 280),
    ("perf_event_open", 298, 241),
    ("userfaultfd", 323, 282),
    ("open_by_handle_at", 304, 265),
    ("name_to_handle_at", 303, 264),
    ("kexec_load", 246, 104),
    ("kexec_file_load", 320, 294),
    ("init_module", 175, 105),
    ("finit_module", 313, 273),
    ("delete_module", 176, 106),
    ("reboot", 169, 142),
    ("swapon", 167, 224),
    ("swapoff", 168, 225),
    ("acct", 163, 89),
    ("quotactl", 179, 60),
    ("lookup_dcookie", 212, 18),
)

BLOCKED: tuple[str, ...] = tuple(name for name, _, _ in _SYSCALLS)
"""Refused with EPERM. Besides these, clone with a namespace flag gets EPERM and clone3 ENOSYS."""


class _Arch(NamedTuple):
    audit_arch: int  # what seccomp_data.arch holds for this machine's native ABI
    clone: int
    clone3: int
    seccomp: int
    blocked: tuple[int, ...]


_ARCHES = {
    "x86_64": _Arch(0xC000003E, 56, 435, 317, tuple(x86_64 for _, x86_64, _ in _SYSCALLS)),
    "aarch64": _Arch(0xC00000B7, 220, 435, 277, tuple(arm64 for _, _, arm64 in _SYSCALLS)),
}

_X32_SYSCALL_BIT = 0x40000000
_CLONE_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)

# Offsets into struct seccomp_data; args[0]'s low word, as both machines are little-endian and
# the kernel reads clone's flags as 32 bits.
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | op | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1  # every thread of the worker, not only the caller

_SOCK_FILTER = struct.Struct("=HBBI")

_UNSUPPORTED = "No seccomp filter for machine {machine!r}: only x86_64 and aarch64 are supported."
_REFUSED = (
    "The kernel refused the seccomp filter ({reason}): set no_new_privs first, "
    "or check that the kernel has CONFIG_SECCOMP_FILTER."
)

# A jump names its target label; build_filter turns labels into the u8 offsets BPF wants.
_Instruction = tuple[int, str | None, str | None, int]


def _program(machine: str) -> tuple[list[_Instruction], dict[str, int]]:
    try:
        arch = _ARCHES[machine]
    except KeyError:
        raise OSError(errno.ENOTSUP, _UNSUPPORTED.format(machine=machine)) from None
    code: list[_Instruction] = [
        (_LD_W_ABS, None, None, _ARCH),
        # Another ABI (i386 int 0x80, arm32 compat) numbers syscalls differently: never allow it.
        (_JEQ, "load_nr", "kill", arch.audit_arch),
    ]
    labels = {"load_nr": len(code)}
    code.append((_LD_W_ABS, None, None, _NR))
    if machine == "x86_64":
        code.append((_JGE, "eperm", None, _X32_SYSCALL_BIT))
    code.append((_JEQ, "clone", None, arch.clone))
    # clone3's flags sit behind a pointer the filter cannot read; ENOSYS makes glibc use clone.
    code.append((_JEQ, "enosys", None, arch.clone3))
    code.extend((_JEQ, "eperm", None, nr) for nr in arch.blocked)
    code.append((_RET, None, None, _RET_ALLOW))
    labels["clone"] = len(code)
    code.append((_LD_W_ABS, None, None, _ARG0_LOW))
    code.append((_JSET, "eperm", None, _CLONE_NAMESPACES))
    code.append((_RET, None, None, _RET_ALLOW))
    for label, action in (
        ("eperm", _RET_ERRNO | errno.EPERM),
        ("enosys", _RET_ERRNO | errno.ENOSYS),
        ("kill", _RET_KILL_PROCESS),
    ):
        labels[label] = len(code)
        code.append((_RET, None, None, action))
    return code, labels


def build_filter(machine: str) -> bytes:
    """The filter for `platform.machine()` value `machine`, as packed `struct sock_filter`s."""
    code, labels = _program(machine)
    packed = bytearray()
    for index, (op, true, false, k) in enumerate(code):
        # A BPF jump counts from the next instruction and can only go forward 255 of them.
        jt = labels[true] - index - 1 if true else 0
        jf = labels[false] - index - 1 if false else 0
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError(f"BPF jump out of range at instruction {index}")
        packed += _SOCK_FILTER.pack(op, jt, jf, k)
    return bytes(packed)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter() -> None:
    """Install the filter on every thread of this process, for good; it is inherited by children."""
    machine = platform.machine()
    program = build_filter(machine)
    seccomp_nr = _ARCHES[machine].seccomp
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _SOCK_FILTER.size, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(
        ctypes.c_long(seccomp_nr),
        ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_ulong(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result == 0:
        return
    if result > 0:  # TSYNC names a thread that already has a different filter
        code, reason = errno.EBUSY, f"thread {result} could not be synchronised"
    else:
        code = ctypes.get_errno()
        reason = os.strerror(code)
    raise OSError(code, _REFUSED.format(reason=reason))
