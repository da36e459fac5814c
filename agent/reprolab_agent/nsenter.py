"""Entering a run's sandbox from a forked process, and giving up every privilege before any run
code exists.

bubblewrap builds the sandbox once per run (its mount, PID, network, IPC and UTS namespaces, and
a user namespace when the agent is not root) around a placeholder process; a process forked from
the warm template then joins those namespaces with setns(2) (reprolab_agent.runproc). Joining
needs privilege over the namespaces (root, or the owner of the sandbox's user namespace, which
gets every capability inside it), so the joiner must drop it all at once afterwards: every
capability, the bounding set, set-uid gains (no_new_privs) and, for a root agent, root itself.

Linux only; Python 3.11 has no os.setns, so the calls go through libc with ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
from pathlib import Path

# Join order within one user namespace: the user namespace first (it grants the privilege to
# join the rest), the mount namespace last (it moves the root and the working directory), the PID
# namespace before it (it applies to children only, so it may come late). See join_plan.
NAMESPACES = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt")

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_NS_GET_USERNS = 0xB701  # ioctl: the user namespace owning a namespace
_NS_GET_PARENT = 0xB702  # ioctl: the parent of a user (or PID) namespace

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def differing_namespaces(pid: int, *, proc: Path = Path("/proc")) -> list[str]:
    """The namespaces of process `pid` that are not this process's own, in join order (what
    bubblewrap actually unshared for the sandbox, whatever its options were)."""
    found = []
    for name in NAMESPACES:
        try:
            theirs = os.readlink(proc / str(pid) / "ns" / name)
            mine = os.readlink(proc / "self" / "ns" / name)
        except FileNotFoundError:  # a kernel without this namespace type
            continue
        if theirs != mine:
            found.append(name)
    return found


def join_plan(pid: int) -> list[tuple[str, int]]:
    """The namespaces of `pid` that differ from this process's, as open file descriptors in the
    order a process must join them (held fds keep the sandbox joinable and cannot be confused with
    a recycled pid).

    Without a user namespace (a root agent) that is NAMESPACES' order. With one, bubblewrap may
    nest two (`--disable-userns` puts the sandbox in an inner one), and its other namespaces belong
    to the outer: a process joins a namespace only with privilege in the user namespace owning
    it, and entering the inner one gives that up in the outer. So the plan walks the user
    namespaces outermost first, each followed by the namespaces it owns."""
    names = differing_namespaces(pid)
    fds = {name: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in names}
    if "user" not in fds:
        return [(name, fds[name]) for name in names]
    mine = os.stat("/proc/self/ns/user").st_ino
    chain = [fds.pop("user")]
    while True:  # up to (not including) this process's own user namespace
        parent = fcntl.ioctl(chain[-1], _NS_GET_PARENT)
        if os.fstat(parent).st_ino == mine:
            os.close(parent)
            break
        chain.append(parent)
    owners = {}
    for name, fd in fds.items():
        owner = fcntl.ioctl(fd, _NS_GET_USERNS)
        owners[name] = os.fstat(owner).st_ino
        os.close(owner)
    plan: list[tuple[str, int]] = []
    for user in reversed(chain):
        plan.append(("user", user))
        inode = os.fstat(user).st_ino
        plan += [(name, fds.pop(name)) for name in NAMESPACES if name in fds and owners[name] == inode]
    return plan + list(fds.items())  # owned elsewhere: joining them fails, and says so


def join(fds: list[int]) -> None:
    """setns(2) into each namespace, in the order given (see NAMESPACES). Closes the fds. The
    caller must be single-threaded (a freshly forked child): the kernel refuses a user
    namespace change otherwise."""
    for fd in fds:
        try:
            _check(_libc.setns(fd, 0), "setns")
        finally:
            os.close(fd)


def no_new_privs() -> None:
    """Nothing this process or its children execute can gain privileges (set-uid binaries,
    file capabilities)."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def drop_capabilities() -> None:
    """Empty the bounding set (so no exec can regain a capability), the ambient set, and the
    effective, permitted and inheritable sets. Needs CAP_SETPCAP for the bounding set, which a
    process that just joined its own user namespace, or root, has."""
    drop_bounding_set()
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL on kernels without ambient sets
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # zeroed: no capability in any set
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def become(uid: int, gid: int) -> None:
    """Switch to an unprivileged uid and gid for good (real, effective and saved); the kernel
    clears the permitted and effective capabilities as root is left."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"could not switch to uid {uid}")


def enter(fds: list[int], *, uid: int | None = None, gid: int | None = None) -> None:
    """Join the sandbox's namespaces, then give up every privilege: a run uid (`uid`, for a root
    agent), or every capability (a process that joined the sandbox's user namespace holds them
    all there), and set-uid gains either way."""
    join(fds)
    if uid is not None:
        drop_bounding_set()
        become(uid, uid if gid is None else gid)
    elif fds or os.geteuid() == 0:
        drop_capabilities()
    no_new_privs()


def drop_bounding_set() -> None:
    for capability in range(_last_capability() + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            _check(-1, f"prctl(PR_CAPBSET_DROP, {capability})")  # EINVAL: no such capability here


_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
_KEYCTL_CLEAR = 7
_KEY_SPEC_USER_KEYRING = -4
_KEY_SPEC_USER_SESSION_KEYRING = -5


def clear_keyrings() -> None:
    """Empty this uid's kernel keyrings: they outlive its processes, so a run uid lent again
    would find what the previous run left there. Best effort (no keyctl on other machines)."""
    number = _SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        return
    for keyring in (_KEY_SPEC_USER_KEYRING, _KEY_SPEC_USER_SESSION_KEYRING):
        _libc.syscall(number, _KEYCTL_CLEAR, keyring)


# --- a seccomp filter for run code ----------------------------------------------------------------
# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
_SECCOMP_MODE_FILTER = 2
_PR_SET_SECCOMP = 22
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_CLONE_NEWUSER = 0x10000000
_EPERM, _ENOSYS = 1, 38
# (audit arch, syscall numbers) per machine: unshare, clone, clone3, add_key, request_key, keyctl
_SYSCALLS = {
    "x86_64": (
        0xC000003E,
        {"unshare": 272, "clone": 56, "clone3": 435, "add_key": 248, "request_key": 249, "keyctl": 250},
    ),
    "aarch64": (
        0xC00000B7,
        {"unshare": 97, "clone": 220, "clone3": 435, "add_key": 217, "request_key": 218, "keyctl": 219},
    ),
}


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _filter_program(arch: int, numbers: dict[str, int]) -> list[tuple[int, int, int, int]]:
    """Run code may not create user namespaces (unshare or clone with CLONE_NEWUSER; clone3, whose
    flags a filter cannot read, answers ENOSYS so libc falls back to clone) nor use the kernel's
    keyrings, which outlive a run. Everything else is allowed: the sandbox's namespaces, uid and
    limits do the rest."""
    ld_w, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    deny = _RET_ERRNO | _EPERM
    # (instruction, label of the jump when true) with labels resolved below: jumps are relative.
    body: list[tuple[tuple[int, int, int, int], str | None]] = [
        ((ld_w, 0, 0, 4), None),  # arch
        ((jeq, 0, 0, arch), "syscall"),
        ((ret, 0, 0, deny), None),  # another ABI (x32, 32-bit): refused outright
        ((ld_w, 0, 0, 0), "@syscall"),  # nr
        ((jeq, 0, 0, numbers["unshare"]), "flags"),
        ((jeq, 0, 0, numbers["clone"]), "flags"),
        ((jeq, 0, 0, numbers["clone3"]), "enosys"),
        ((jeq, 0, 0, numbers["add_key"]), "deny"),
        ((jeq, 0, 0, numbers["request_key"]), "deny"),
        ((jeq, 0, 0, numbers["keyctl"]), "deny"),
        ((ret, 0, 0, _RET_ALLOW), None),
        ((ld_w, 0, 0, 16), "@flags"),  # args[0], low word: the flags of unshare and clone
        ((jset, 0, 0, _CLONE_NEWUSER), "deny"),
        ((ret, 0, 0, _RET_ALLOW), None),
        ((ret, 0, 0, _RET_ERRNO | _ENOSYS), "@enosys"),
        ((ret, 0, 0, deny), "@deny"),
    ]
    labels = {label[1:]: i for i, (_, label) in enumerate(body) if label and label.startswith("@")}
    program = []
    for i, ((code, _, _, k), label) in enumerate(body):
        jump = labels[label] - i - 1 if label and not label.startswith("@") else 0
        program.append((code, jump, 0, k))
    return program


def forbid_risky_syscalls() -> bool:
    """Install the filter on this process and everything it starts (after no_new_privs, which
    the kernel requires of an unprivileged process). False where this machine's calls are not
    known (nothing installed)."""
    known = _SYSCALLS.get(os.uname().machine)
    if known is None:
        return False
    program = _filter_program(*known)
    instructions = (_SockFilter * len(program))(*[_SockFilter(*i) for i in program])
    fprog = _SockFprog(len(program), instructions)
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "prctl(PR_SET_SECCOMP)")
    return True
