"""Running untrusted generated code: a separate process with a wall and CPU timeout, memory,
file-size and process-count limits, its own namespaces, and (when we are root, as in a container)
an unprivileged throw-away user id. A Python-level guard (as in OpenAI's human-eval) disables the
destructive os/shutil/subprocess/socket calls on top of that, but it is bypassed by
`importlib.reload(os)`, `ctypes` or `posix`: the OS layers are what must hold.

OS layers (`LAYERS`; `Outcome.layers` says which held; each tested alone in
tests/evals/test_sandbox.py):
- network: a new network namespace has only a downed loopback, so no connection goes anywhere;
- ipc: a new IPC namespace, so System V and POSIX IPC objects die with the run;
- tmp: fresh size-limited tmpfs on /tmp, /var/tmp and /dev/shm (a new mount namespace whose
  mounts never propagate to the host); the work dir is copied into that /tmp, so everything the
  code writes vanishes with the namespace;
- readonly: every other mount is read-only, so not even the user's own files can be changed;
- hidden: empty read-only mounts over the server's data (`default_hidden_paths`: its SQLite
  database, /run with its Unix sockets) and `Limits.hidden_paths`;
- proc: a new PID namespace with its own /proc: no other process's command line or environment is
  visible, and when the program's init exits the kernel kills every process left in it;
- uid: as root, the code runs as a uid that owns nothing, whose processes are all killed at the end.
Unprivileged, the namespaces come from a user namespace mapping only our own ids, so the program,
not root in it, loses every capability at exec (it cannot unmount what hides the data). Where user
namespaces are not allowed, only the limits (and the guard) remain, and `Outcome.layers` is empty.

Processes: server -> launcher -> init (PID 1 of the new PID namespace) -> program.
- launcher: this file run as a script by a fresh interpreter (`_launch`), still privileged; it
  unshares the namespaces (creating a PID namespace takes a fork: only the unsharer's children
  are in it), forks init, waits, and exits with its status. SIGTERM (the timeout) kills init. A
  fresh interpreter, not a preexec_fn, so no Python runs in a forked copy of a threaded server.
- init (`_init`): sets up the mounts (/proc must be mounted from inside the PID namespace), forks
  the program, reaps orphans and exits with the program's status.
- program (`_exec_program`): limits, the throw-away uid, no new privileges, exec of the code.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

LAYERS = ("network", "ipc", "tmp", "readonly", "hidden", "proc", "uid")
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
NAMESPACES = {"network": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "mount": CLONE_NEWNS, "pid": CLONE_NEWPID}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1  # Linux 5.12+

GUARD = '''
import builtins, os, shutil, subprocess, socket
for _name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
              "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
              "chmod", "chown", "chroot", "lchown", "execv", "execve", "execvp", "execvpe", "execl",
              "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnl", "posix_spawn",
              "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = None
socket.socket = socket.create_connection = socket.socketpair = None
builtins.exit = builtins.quit = None
del _name
'''


@dataclass
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16
    tmp_mb: int = 64  # the size of each private tmpfs (/tmp, /var/tmp, /dev/shm)
    hidden_paths: tuple[str | Path, ...] = ()  # unreadable to the code, besides default_hidden_paths()


@dataclass
class Outcome:
    status: str  # "passed", "failed" or "timed out"
    detail: str = ""  # the end of stderr
    uid: int | None = None  # the throw-away user id it ran as (root only)
    layers: tuple[str, ...] = ()  # the OS layers (of LAYERS) that held

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def default_hidden_paths() -> list[Path]:
    """What the code must never read: the server's data directory (where platform.store keeps its
    SQLite database: $XDG_DATA_HOME/magistral, and ~/.local/share/magistral), a SQLite file named by
    $MAGISTRAL_DATABASE_URL, and /run, whose Unix sockets (PostgreSQL's, Redis's) would reach local
    services past the network namespace."""
    share = Path(os.path.expanduser("~")) / ".local" / "share"
    paths = [share / "magistral", Path(os.environ.get("XDG_DATA_HOME") or share) / "magistral", Path("/run")]
    url = os.environ.get("MAGISTRAL_DATABASE_URL", "")
    if url.startswith("sqlite:///"):
        database = url.removeprefix("sqlite:///").split("?")[0]
        paths += [Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return paths


def _world_executable(path: Path) -> bool:
    """Can an unprivileged uid run this interpreter (every folder on the way searchable)?"""
    path = path.resolve()
    if not path.is_file() or not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


def sandbox_python() -> str:
    """Our own interpreter when possible; as root, the first one a throw-away uid can run (a
    virtual environment under /root is not): generated code needs only the standard library."""
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    if os.geteuid() != 0:
        return sys.executable
    for candidate in candidates:
        if candidate and _world_executable(Path(candidate)):
            return candidate
    raise RuntimeError("no Python interpreter that an unprivileged user can execute (install python3)")


def _processes_of(uid: int) -> list[int]:
    """Live processes of `uid` (zombies are dead already: they wait for init to reap them)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if state != "Z":
                pids.append(int(entry))
    return pids


def _kill_uid(uid: int, python: str) -> None:
    """SIGKILL every process of `uid`: kill(-1) sent as that uid reaches exactly its processes,
    including children that escaped the process group; repeated while forks race the kill. (With a
    PID namespace none are left by now; without one this is what ends them.)"""
    for _ in range(20):
        if not _processes_of(uid):
            return
        subprocess.run([python, "-I", "-S", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
                       user=uid, group=uid, extra_groups=[], env={}, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)


def run_python(source: str, limits: Limits | None = None, guard: bool = True) -> Outcome:
    """Run `source` as a script in the sandbox; exit status 0 is "passed"."""
    limits = limits or Limits()
    uid = random.randrange(200_000, 2_000_000) if os.geteuid() == 0 else None
    python = sandbox_python()
    workdir = Path(tempfile.mkdtemp(prefix="magistral-sandbox-"))
    try:
        _write_program(workdir, source, guard, uid)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(workdir)}
        hidden = {str(Path(p).resolve()) for p in [*default_hidden_paths(), *limits.hidden_paths]}
        plan = {"python": python, "workdir": str(workdir), "uid": uid, "env": env, "hidden": sorted(hidden),
                "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb, "tmp_mb": limits.tmp_mb,
                "max_processes": limits.max_processes, "max_file_mb": limits.max_file_mb}
        status, returncode, layers = _supervise(plan, limits.timeout_s)
        detail = (workdir / "stderr").read_bytes()[-2000:].decode(errors="replace").strip()
        if status == "failed" and not detail:
            detail = f"exit status {returncode}"
        return Outcome(status=status, detail=detail.splitlines()[-1] if detail else "", uid=uid,
                       layers=layers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_program(workdir: Path, source: str, guard: bool, uid: int | None) -> None:
    """program.py, and main.py that runs it (after the guard). Where there is no mount namespace the
    program runs in this directory, so as root it belongs to the throw-away uid."""
    (workdir / "program.py").write_text(source)
    (workdir / "main.py").write_text((GUARD if guard else "") +
                                     "exec(compile(open('program.py').read(), 'program.py', 'exec'), "
                                     "{'__name__': '__main__'})\n")
    for name in ("stdout", "stderr"):
        (workdir / name).touch()
    if uid is not None:
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, uid, uid)
        workdir.chmod(0o700)


def _supervise(plan: dict, timeout_s: float) -> tuple[str, int, tuple[str, ...]]:
    """Start the launcher, wait for it up to the timeout, then make sure nothing is left running.
    The status, the exit status and the layers that held."""
    workdir = Path(plan["workdir"])
    report, plan["report_fd"] = os.pipe()  # init tells which layers held
    launcher = [plan["python"], "-I", "-S", str(Path(__file__).resolve()), json.dumps(plan)]
    try:
        with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
            process = subprocess.Popen(launcher, cwd=workdir, env=plan["env"], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err, pass_fds=(plan["report_fd"],),
                                       start_new_session=True)
    except BaseException:
        os.close(report)
        raise
    finally:
        os.close(plan["report_fd"])
    try:
        if _wait(process, timeout_s):
            status = "passed" if process.wait() == 0 else "failed"
        else:
            status = "timed out"
            process.terminate()  # the launcher kills init, and the kernel all of its namespace
            _wait(process, 5)
    finally:
        try:  # whatever is left in its process group (where there is no PID namespace)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        if plan["uid"] is not None:
            _kill_uid(plan["uid"], plan["python"])
    return status, process.returncode, _read_report(report)


def _wait(process: subprocess.Popen, timeout_s: float) -> bool:
    """Did `process` exit within the timeout? A pidfd wakes us the moment it does (Popen.wait with a
    timeout polls, sleeping up to 50 ms at a time, which doubled the time of a short run)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:  # a kernel before 5.3
        try:
            process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([pidfd], [], [], timeout_s)[0])
    finally:
        os.close(pidfd)


def _read_report(fd: int) -> tuple[str, ...]:
    """The layers init reported (none if it never got that far); never blocks."""
    os.set_blocking(fd, False)
    try:
        text = os.read(fd, 4096).decode()
    except BlockingIOError:
        text = ""
    finally:
        os.close(fd)
    held = json.loads(text) if text.strip() else []
    return tuple(layer for layer in LAYERS if layer in held)


# Everything below runs in the launcher, init and the program, not in the server.

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _unshare(flags: int) -> bool:
    return _libc.unshare(flags) == 0


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def c(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)
    _check(_libc.mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)), f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), "prctl")


def _read_only_everywhere() -> bool:
    """Every mount read-only, recursively (mount_setattr); False on a kernel without it."""
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clear, ...
    result = _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_long(AT_FDCWD), ctypes.c_char_p(b"/"),
                           ctypes.c_long(AT_RECURSIVE), attr, ctypes.c_long(ctypes.sizeof(attr)))
    if result != 0 and ctypes.get_errno() == errno.ENOSYS:
        return False
    _check(result, "mount_setattr /")
    return True


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def _child(stage: Callable[..., object], *args: object) -> NoReturn:
    """Run a stage in a forked child: it execs or exits, and never returns into the caller's code."""
    try:
        stage(*args)
    except BaseException:
        traceback.print_exc()
    os._exit(125)


def _launch(plan: dict) -> int:
    """The launcher: enter the namespaces, fork init, wait for it; SIGTERM (the timeout) kills init."""
    namespaces = _enter_namespaces(root=plan["uid"] is not None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # until init's pid is known
    init = os.fork()
    if init == 0:
        _child(_init, plan, namespaces)
    os.close(plan["report_fd"])
    signal.signal(signal.SIGTERM, lambda *_: os.kill(init, signal.SIGKILL))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.waitid(os.P_PID, init, os.WEXITED | os.WNOWAIT)  # a zombie still: SIGTERM kills nobody else
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return _exit_code(os.waitpid(init, 0)[1])


def _enter_namespaces(root: bool) -> set[str]:
    """Unshare every namespace this process may create. Unprivileged, a user namespace first (that
    is what lets an ordinary user create the others), mapping only our own ids to themselves: the
    program is then not root in it and loses all its capabilities at exec."""
    if not root:
        uid, gid = os.geteuid(), os.getegid()
        if not _unshare(CLONE_NEWUSER):
            return set()
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/setgroups").write_text("deny")  # required before an unprivileged gid_map
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    return {name for name, flag in NAMESPACES.items() if _unshare(flag)}


def _init(plan: dict, namespaces: set[str]) -> NoReturn:
    """Init: the private file system, then fork the program, reap orphans and exit with the program's
    status. In a PID namespace this is PID 1, and its exit kills every process left there."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the launcher killed: init too, and with it the namespace
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    layers, workdir = [name for name in ("network", "ipc") if name in namespaces], plan["workdir"]
    if "mount" in namespaces:  # a mount that fails there is an error: the run fails rather than leak
        mounted, workdir = _private_filesystem(plan, own_pids="pid" in namespaces)
        layers += mounted
    if plan["uid"] is not None:
        layers.append("uid")
    os.write(plan["report_fd"], json.dumps(layers).encode())
    os.close(plan["report_fd"])
    program = os.fork()
    if program == 0:
        _child(_exec_program, plan, workdir)
    while True:
        pid, wait_status = os.waitpid(-1, 0)
        if pid == program:
            os._exit(_exit_code(wait_status))


def _private_filesystem(plan: dict, own_pids: bool) -> tuple[list[str], str]:
    """In the new mount namespace: hide the hidden paths, make everything read-only, mount fresh
    tmpfs on the tmp dirs with a copy of the work dir in /tmp, and a /proc of this PID namespace.
    The layers that hold, and where the work dir is now."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates back to the host
    for path in plan["hidden"]:
        _hide(path)
    layers = ["hidden", "readonly"] if _read_only_everywhere() else ["hidden"]
    for path in PRIVATE_TMP:  # mounted after the read-only pass, so writable
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={plan['tmp_mb']}m,nr_inodes=16384,mode=1777")
    workdir = _copy_workdir(plan)
    if own_pids:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:  # other processes' command lines would show: no /proc at all
        _mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0")
    return layers + ["tmp", "proc"], workdir


def _hide(path: str) -> None:
    """An empty read-only tmpfs over a directory, /dev/null over a file. A path this process cannot
    reach (missing, or behind a folder it may not search) is out of the program's reach as well."""
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    if is_dir:
        _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0")
    else:
        _mount("/dev/null", path, None, MS_BIND)


def _copy_workdir(plan: dict) -> str:
    """The program's files into /tmp/<work dir's name>, on the private tmpfs: what it writes there
    goes when the namespace does. They are read through our cwd: the host's work dir, now hidden."""
    workdir = "/tmp/" + os.path.basename(plan["workdir"])
    os.mkdir(workdir, 0o700)
    for name in ("program.py", "main.py"):
        Path(workdir, name).write_bytes(Path(name).read_bytes())
    if plan["uid"] is not None:
        for path in (workdir, f"{workdir}/program.py", f"{workdir}/main.py"):
            os.chown(path, plan["uid"], plan["uid"])
    return workdir


def _exec_program(plan: dict, workdir: str) -> None:
    """The program: limits, the throw-away uid, then exec of the code (with the guard in main.py)."""
    cpu = int(plan["timeout_s"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    memory = plan["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = plan["max_file_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NPROC, (plan["max_processes"], plan["max_processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if plan["uid"] is not None:
        os.setgroups([])
        os.setgid(plan["uid"])
        os.setuid(plan["uid"])
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it: dies with init
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # no set-uid binary (umount, su) gives privileges back
    os.chdir(workdir)
    env = dict(plan["env"], HOME=workdir, TMPDIR=workdir)
    os.execve(plan["python"], [plan["python"], "-I", "main.py"], env)


if __name__ == "__main__":  # the launcher: python -I -S sandbox.py PLAN
    sys.exit(_launch(json.loads(sys.argv[1])))
