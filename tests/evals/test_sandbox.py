"""The sandbox that runs generated code: HumanEval's own solutions pass, attacks are stopped.
Each attack runs with the Python-level guard off, so the OS-level layers are what stop it."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from magistral.evals.base import Item
from magistral.evals.humaneval import HumanEval, load_problems, program
from magistral.evals.sandbox import Limits, _processes_of, run_python

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="uid and network isolation need root (a container)")


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


@as_root
def test_a_fork_bomb_is_capped_and_every_process_killed() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    outcome = run_python(bomb, Limits(timeout_s=3, max_processes=16), guard=False)
    assert outcome.status == "timed out" and outcome.uid is not None
    left = _processes_of(outcome.uid)
    assert left == [], [open(f"/proc/{p}/stat").read()[:80] for p in left[:3]]  # none left behind
    assert run_python("import os\nos.fork()\n").status == "failed"  # the guard alone refuses


@as_root
def test_removing_files_outside_the_temp_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    attack = (f"import shutil, subprocess\nsubprocess.run(['rm', '-rf', {str(outside)!r}])\n"
              f"shutil.rmtree({str(outside)!r})\n")
    outcome = run_python(attack, guard=False)
    assert outcome.status == "failed" and "Permission denied" in outcome.detail
    assert (outside / "data.txt").read_text() == "keep me"
    writes_inside = "open('scratch.txt', 'w').write('ok')\nimport os\nassert os.path.exists('scratch.txt')\n"
    assert run_python(writes_inside, guard=False).passed  # its own directory is writable


@as_root
def test_no_network_even_to_loopback() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        attack = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        outcome = run_python(attack + "s.sendall(b'leak')\n", guard=False)
        assert outcome.status == "failed" and ("unreachable" in outcome.detail or "refused" in outcome.detail)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing arrived
    finally:
        listener.close()


def test_memory_is_limited() -> None:
    outcome = run_python("x = bytearray(3 * 1024 ** 3)\n", Limits(memory_mb=512), guard=False)
    assert outcome.status == "failed" and "MemoryError" in outcome.detail
