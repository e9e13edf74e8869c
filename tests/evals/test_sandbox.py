"""The sandbox that runs generated code: HumanEval's own solutions pass, attacks are stopped.
Each attack runs with the Python-level guard off (but the one that bypasses the guard), so the
OS-level layers are what stop it, and each is aimed so that only the layer under test can stop it:
its target lies outside /tmp, where the tmp layer would hide it anyway, and is readable or writable
by the throw-away uid, which would otherwise stop it. An attack program exits 0 when it was stopped
and fails with "LEAK: ..." when it got through. The last test runs them all as a non-root user."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from textwrap import dedent

import pytest

import magistral.evals.sandbox
from magistral.evals.base import Item
from magistral.evals.humaneval import HumanEval, load_problems, program
from magistral.evals.sandbox import LAYERS, Limits, Outcome, _processes_of, run_python, sandbox_python

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the throw-away uid needs root (a container)")
NOBODY = 65534


def held(outcome: Outcome, layer: str) -> None:
    """As root every layer must hold; unprivileged, one this machine does not allow skips the test."""
    if layer not in outcome.layers:
        assert os.geteuid() != 0, f"the {layer} layer must hold as root: {outcome}"
        pytest.skip(f"the {layer} layer is not available unprivileged here (no user namespaces)")


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A world-readable directory outside /tmp, /var/tmp and /dev/shm, removed afterwards."""
    base = Path("/var/lib") if os.access("/var/lib", os.W_OK) else Path(__file__).parent
    path = Path(tempfile.mkdtemp(prefix="magistral-sandbox-test-", dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def arguments(pid: str) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def host_processes_with(argument: str) -> list[int]:
    """Processes on the host with `argument` in their command line."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and argument.encode() in arguments(entry):
                found.append(int(entry))
        except OSError:
            continue
    return found


# The attacks, shared by the tests as root and the one as a non-root user.

def network_attack(port: int) -> str:
    return dedent(f"""\
        import socket
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')
        except OSError as e:
            print('stopped:', e)
        else:
            raise SystemExit('LEAK: connected')
        """)


def tmp_attack(marker: str) -> str:
    """Leaves files in /tmp, /var/tmp and /dev/shm (it can: they are its own) and looks for ours."""
    return dedent(f"""\
        import os
        for d in ('/tmp', '/var/tmp', '/dev/shm'):
            open(f'{{d}}/{marker}', 'w').write('left behind')
            assert os.path.exists(f'{{d}}/{marker}')
        if os.path.exists('/tmp/{marker}-host'):
            raise SystemExit('LEAK: sees the host /tmp')
        """)


def ipc_attack(key: int) -> str:
    return dedent(f"""\
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.shmget({key}, 4096, 0o1666) >= 0, ctypes.get_errno()  # IPC_CREAT
        """)


def readonly_attack(directory: Path) -> str:
    return dedent(f"""\
        try:
            open('{directory}/written', 'w').write('x')
        except OSError as e:
            print('stopped:', e)
        else:
            raise SystemExit('LEAK: wrote outside')
        open('scratch.txt', 'w').write('its own directory is writable')
        """)


def hidden_attack(directory: Path) -> str:
    """Tries to unmount what hides the data dir first (needs a capability the program has not)."""
    return dedent(f"""\
        import ctypes, os
        ctypes.CDLL(None).umount2(b'{directory}', 2)
        for name in ('secret.txt', 'magistral.db'):
            try:
                data = open(os.path.join('{directory}', name), 'rb').read()
            except OSError as e:
                print('stopped:', e)
            else:
                raise SystemExit('LEAK: ' + data.decode(errors='replace'))
        """)


def proc_attack(pid: int, secret: str) -> str:
    """Looks for `secret` in every command line it can see, and for process `pid` directly."""
    return dedent(f"""\
        import os
        secret = {secret[:4]!r} + {secret[4:]!r}  # not in one piece in its own source
        seen = []
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                try:
                    seen.append(open(f'/proc/{{entry}}/cmdline', 'rb').read())
                except OSError:
                    pass
        assert open('/proc/self/cmdline', 'rb').read()  # /proc works
        if any(secret.encode() in cmdline for cmdline in seen):
            raise SystemExit('LEAK: ' + secret)
        if os.path.exists('/proc/{pid}/environ'):
            raise SystemExit('LEAK: sees process {pid}')
        print('processes seen:', len(seen))
        """)


def daemon_attack(marker: str) -> str:
    """Leaves a daemon behind: double fork, a new session, then exec of `sleep marker`."""
    return dedent(f"""\
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv('/bin/sleep', ['sleep', '{marker}'])
            os._exit(0)
        os.wait()
        """)


def secret_holder(secret: str, user: int | None = None) -> subprocess.Popen:
    """A process with a database password in its command line, as a server started with one."""
    return subprocess.Popen([sandbox_python(), "-c", "import time; time.sleep(60)",
                             f"--database-url=postgresql://magistral:{secret}@127.0.0.1/magistral"],
                            user=user, stdin=subprocess.DEVNULL)


def make_data_dir(parent: Path, secret: str, name: str = "data") -> Path:
    """A server data dir: a secret and a SQLite-like database, all world-readable."""
    data = parent / name
    data.mkdir(mode=0o755)
    (data / "secret.txt").write_text(secret)
    (data / "magistral.db").write_bytes(b"SQLite format 3\0" + secret.encode())
    for path in data.iterdir():
        path.chmod(0o644)
    return data


def new_marker() -> str:
    return str(random.randrange(10**8, 10**9))


# HumanEval and the limits.

def test_canonical_solutions_pass_164_of_164() -> None:
    task = HumanEval(Limits(timeout_s=20))
    problems = load_problems()
    assert len(problems) == 164

    def check(p: dict) -> bool:
        item = Item(id=p["task_id"], messages=[], gold="passed", meta=p)
        return task.score(item, p["canonical_solution"])[1]
    with ThreadPoolExecutor(4) as pool:
        passed = list(pool.map(check, problems))
    assert sum(passed) == 164


def test_a_wrong_solution_fails_and_a_whole_function_in_a_fence_is_used() -> None:
    p = load_problems()[0]
    item = Item(id=p["task_id"], messages=[], gold="passed", meta=p)
    assert HumanEval().score(item, "    return False\n")[1] is False
    whole = ("Here you go:\n```python\nfrom typing import List\n\n"
             "def has_close_elements(numbers, threshold):\n    return any(abs(a - b) < threshold\n"
             "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    assert HumanEval().score(item, whole)[1] is True
    assert program("def f():\n", "    return 1\n") == "def f():\n    return 1\n"


def test_an_infinite_loop_is_stopped_at_the_timeout() -> None:
    start = time.monotonic()
    outcome = run_python("while True:\n    pass\n", Limits(timeout_s=2), guard=False)
    assert outcome.status == "timed out" and time.monotonic() - start < 10


def test_memory_is_limited() -> None:
    outcome = run_python("x = bytearray(3 * 1024 ** 3)\n", Limits(memory_mb=512), guard=False)
    assert outcome.status == "failed" and "MemoryError" in outcome.detail


@as_root
def test_every_layer_holds_as_root() -> None:
    assert run_python("pass\n").layers == LAYERS


# Each layer alone.

@as_root
def test_a_fork_bomb_is_capped_and_every_process_killed() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    outcome = run_python(bomb, Limits(timeout_s=3, max_processes=16), guard=False)
    assert outcome.status == "timed out" and outcome.uid is not None
    left = _processes_of(outcome.uid)
    assert left == [], [open(f"/proc/{p}/stat").read()[:80] for p in left[:3]]  # none left behind
    assert run_python("import os\nos.fork()\n").status == "failed"  # the guard alone refuses


@as_root
def test_other_users_files_can_be_neither_read_nor_removed(outside_tmp: Path) -> None:
    private = outside_tmp / "private.txt"  # neither hidden nor in /tmp: only the uid keeps it unread
    private.write_text("root's only")
    private.chmod(0o600)
    read = f"print(open({str(private)!r}).read())\n"
    outcome = run_python(read, guard=False)
    held(outcome, "uid")
    assert outcome.status == "failed" and "Permission denied" in outcome.detail, outcome
    attack = (f"import shutil, subprocess\nsubprocess.run(['rm', '-rf', {str(outside_tmp)!r}])\n"
              f"shutil.rmtree({str(outside_tmp)!r})\n")
    outcome = run_python(attack, guard=False)
    assert outcome.status == "failed" and private.read_text() == "root's only"
    writes_inside = "open('scratch.txt', 'w').write('ok')\nimport os\nassert os.path.exists('scratch.txt')\n"
    assert run_python(writes_inside, guard=False).passed  # its own directory is writable


def test_no_network_even_to_loopback() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    try:
        outcome = run_python(network_attack(listener.getsockname()[1]), guard=False)
        held(outcome, "network")
        assert outcome.passed and "LEAK" not in outcome.detail, outcome
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing arrived
    finally:
        listener.close()


def test_files_left_in_tmp_and_dev_shm_are_gone_afterwards() -> None:
    marker = new_marker()
    host_file = Path(f"/tmp/{marker}-host")
    host_file.write_text("the host's")
    try:
        outcome = run_python(tmp_attack(marker), guard=False)
        held(outcome, "tmp")
        assert outcome.passed, outcome
        assert not [d for d in ("/tmp", "/var/tmp", "/dev/shm") if Path(d, marker).exists()]
    finally:
        host_file.unlink()


def test_shared_memory_segments_are_gone_afterwards() -> None:
    key = random.randrange(10**8, 2**31 - 1)
    outcome = run_python(ipc_attack(key), guard=False)
    held(outcome, "ipc")
    assert outcome.passed, outcome
    keys = [line.split()[0] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    assert str(key) not in keys


def test_nothing_outside_its_tmp_dirs_is_writable(outside_tmp: Path) -> None:
    outside_tmp.chmod(0o777)  # the throw-away uid could write here: only read-only mounts stop it
    outcome = run_python(readonly_attack(outside_tmp), guard=False)
    held(outcome, "readonly")
    assert outcome.passed, outcome
    assert not (outside_tmp / "written").exists()


def test_hidden_paths_cannot_be_read(outside_tmp: Path) -> None:
    secret = "secret-" + new_marker()
    data = make_data_dir(outside_tmp, secret)
    assert secret in run_python(hidden_attack(data), guard=False).detail  # readable unless hidden
    outcome = run_python(hidden_attack(data), Limits(hidden_paths=(data,)), guard=False)
    held(outcome, "hidden")
    assert outcome.passed and secret not in outcome.detail, outcome


def test_the_server_data_dir_is_hidden_by_default(outside_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "secret-" + new_marker()
    data = make_data_dir(outside_tmp, secret, name="magistral")  # where platform.store keeps its data
    monkeypatch.setenv("XDG_DATA_HOME", str(outside_tmp))
    outcome = run_python(hidden_attack(data), guard=False)
    held(outcome, "hidden")
    assert outcome.passed and secret not in outcome.detail, outcome
    database = outside_tmp / "elsewhere.db"  # a SQLite database named by $MAGISTRAL_DATABASE_URL
    database.write_text(secret)
    database.chmod(0o644)
    monkeypatch.setenv("MAGISTRAL_DATABASE_URL", f"sqlite:///{database}")
    outcome = run_python(f"data = open({str(database)!r}).read()\nassert not data, 'LEAK: ' + data\n",
                         guard=False)
    assert outcome.passed and secret not in outcome.detail, outcome


def test_other_processes_command_lines_cannot_be_read() -> None:
    secret = "pw-" + new_marker()
    holder = secret_holder(secret)
    try:
        outcome = run_python(proc_attack(holder.pid, secret), guard=False)
        held(outcome, "proc")
        assert outcome.passed, outcome
    finally:
        holder.kill()
        holder.wait()


def test_a_daemon_left_behind_is_killed() -> None:
    marker = new_marker()
    outcome = run_python(daemon_attack(marker), guard=False)
    held(outcome, "proc")
    assert outcome.passed, outcome
    assert host_processes_with(marker) == []


def test_the_guard_bypasses_get_no_further_than_the_os_layers(outside_tmp: Path) -> None:
    """With the guard on: reload(os), ctypes' system(), reload(subprocess) and posix.fork run, but
    write nothing outside, reach no one over the network and leave no process behind."""
    marker = new_marker()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    attack = dedent(f"""\
        import ctypes, importlib, os, posix, socket, subprocess
        importlib.reload(os)
        os.system('echo x > {outside_tmp}/os-system; echo x > /tmp/{marker}')
        ctypes.CDLL(None).system(b'echo x > {outside_tmp}/ctypes')
        importlib.reload(subprocess)
        subprocess.run(['sh', '-c', 'echo x > {outside_tmp}/subprocess'])
        importlib.reload(socket)
        try:
            socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=2)
        except OSError as e:
            print('network:', e)
        if posix.fork() == 0:
            posix.setsid()
            posix.execv('/bin/sleep', ['sleep', '{marker}'])
        print('ran to the end')
        """)
    try:
        outcome = run_python(attack)
        assert outcome.passed, outcome  # the guard was no obstacle
        assert list(outside_tmp.iterdir()) == [] and not Path(f"/tmp/{marker}").exists()
        with pytest.raises(TimeoutError):
            listener.accept()
        assert host_processes_with(marker) == []
    finally:
        listener.close()


# The unprivileged path, and where namespaces are not allowed.

unprivileged = pytest.mark.skipif(os.geteuid() != 0, reason="switching to a non-root user takes root; "
                                  "the suite is unprivileged already, so the tests above take that path")

# Run as root: argv[1:] as nobody, in a user namespace mapping every id (so nobody is nobody) in
# which no further user namespace may be created: a machine that forbids unprivileged ones.
WITHOUT_USER_NAMESPACES = dedent("""\
    import ctypes, os, sys
    ready, go = os.pipe(), os.pipe()
    child = os.fork()
    if child == 0:
        assert ctypes.CDLL(None).unshare(0x10000000) == 0  # CLONE_NEWUSER
        os.write(ready[1], b"x")
        os.read(go[0], 1)  # mapped: root in it
        open("/proc/sys/user/max_user_namespaces", "w").write("0")
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        os.execv(sys.argv[1], sys.argv[1:])
    os.read(ready[0], 1)
    for name in ("uid_map", "gid_map"):
        open(f"/proc/{child}/{name}", "w").write("0 0 4294967295")
    os.write(go[1], b"x")
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    """)


def sandbox_as_nobody(attacks: dict[str, tuple[str, list[str]]], user_namespaces: bool = True) -> dict:
    """Run each attack (source, hidden paths) in the sandbox as nobody; their outcomes, as dicts. The
    module is copied where nobody can read it (it needs only the standard library), and run by an
    interpreter nobody can execute: the virtual environment may live under /root."""
    try:
        python = sandbox_python()
    except RuntimeError as e:
        pytest.skip(f"no interpreter a non-root user can run: {e}")
    module = Path(tempfile.mkdtemp(prefix="magistral-sandbox-module-"))
    try:
        shutil.copy(magistral.evals.sandbox.__file__, module / "sandbox.py")
        module.chmod(0o755)
        (module / "sandbox.py").chmod(0o644)
        script = dedent(f"""\
            import json, sys
            sys.path.insert(0, {str(module)!r})
            from sandbox import Limits, run_python
            outcomes = {{name: vars(run_python(source, Limits(timeout_s=3, hidden_paths=tuple(hidden)),
                                               guard=False))
                        for name, (source, hidden) in json.loads(sys.argv[1]).items()}}
            print(json.dumps(outcomes))
            """)
        command = [python, "-I", "-c", script, json.dumps(attacks)]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
        if user_namespaces:
            run = subprocess.run(command, user=NOBODY, group=NOBODY, extra_groups=[], env=env,
                                 capture_output=True, text=True, timeout=120)
        else:
            run = subprocess.run([python, "-I", "-c", WITHOUT_USER_NAMESPACES, *command], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)
    finally:
        shutil.rmtree(module)


def user_namespaces_allowed(user: int) -> bool:
    """Can `user` create a user namespace (and in it the others)? Asked of unshare(1), not of us."""
    if not shutil.which("unshare"):
        return True  # then the sandbox's own report is all we have
    probe = subprocess.run(["unshare", "--user", "--map-current-user", "--net", "--ipc", "--mount", "--pid",
                            "--fork", "true"], user=user, group=user, extra_groups=[], capture_output=True)
    return probe.returncode == 0


@unprivileged
def test_the_unprivileged_path_as_nobody(outside_tmp: Path) -> None:
    """The sandbox run by a non-root user (nobody, a server's own user as the attacks see it): its
    data dir, another of its processes and a directory of its own are what the code goes for."""
    secret, marker = "pw-" + new_marker(), new_marker()
    data = make_data_dir(outside_tmp, secret)  # nobody's own, and only nobody's
    writable = outside_tmp / "own"
    writable.mkdir()
    for path in (data, *data.iterdir(), writable):
        os.chown(path, NOBODY, NOBODY)
    data.chmod(0o700)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    holder = secret_holder(secret, user=NOBODY)
    try:
        outcomes = sandbox_as_nobody({
            "network": (network_attack(listener.getsockname()[1]), []), "tmp": (tmp_attack(marker), []),
            "ipc": (ipc_attack(int(marker)), []), "readonly": (readonly_attack(writable), []),
            "hidden": (hidden_attack(data), [str(data)]), "proc": (proc_attack(holder.pid, secret), []),
            "daemon": (daemon_attack(marker), [])})
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
        holder.kill()
        holder.wait()
    assert all(outcome["uid"] is None for outcome in outcomes.values())  # the code ran as nobody
    if not user_namespaces_allowed(NOBODY):
        assert all(outcome["layers"] == [] for outcome in outcomes.values())  # and says so
        pytest.skip("unprivileged user namespaces are not allowed here: only the limits hold")
    for name, outcome in outcomes.items():
        assert outcome["layers"] == [layer for layer in LAYERS if layer != "uid"], (name, outcome)
        assert outcome["status"] == "passed" and "LEAK" not in outcome["detail"], (name, outcome)
    assert not [d for d in ("/tmp", "/var/tmp", "/dev/shm") if Path(d, marker).exists()]
    assert not (writable / "written").exists() and host_processes_with(marker) == []
    assert marker not in [line.split()[0] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]


@unprivileged
def test_without_user_namespaces_only_the_limits_hold_and_it_says_so() -> None:
    outcomes = sandbox_as_nobody({"runs": ("print('ok')\n", []), "loops": ("while True:\n    pass\n", [])},
                                 user_namespaces=False)
    assert outcomes["runs"]["status"] == "passed" and outcomes["runs"]["layers"] == []
    assert outcomes["loops"]["status"] == "timed out"


@as_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_root_without_cap_sys_admin_keeps_the_uid_and_says_so() -> None:
    """Root without CAP_SYS_ADMIN (a Docker container's default) can make no namespace."""
    script = "from magistral.evals.sandbox import run_python\nprint(*run_python('pass').layers)\n"
    run = subprocess.run(["setpriv", "--bounding-set=-sys_admin", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["uid"]
