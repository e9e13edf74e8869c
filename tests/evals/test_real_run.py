"""`magistral eval` against the real server and the embedded default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Server, cli

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "mmlu").is_dir(), reason="../shared/data is not here")
def test_eval_cli_runs_mmlu_and_gsm8k(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("eval", "mmlu,gsm8k", "--base-url", server.base_url, "--api-key", server.key,
                 "--data-dir", str(DATA), "--limit", "6", "--max-tokens", "48", "--out", str(out))
    assert result.stdout.strip() == str(out)
    report = json.loads((out / "report.json").read_text())
    assert [t["task"] for t in report["tasks"]] == ["mmlu", "gsm8k"]
    assert all(len(t["items"]) == 6 for t in report["tasks"])
    assert all(not item["error"] and item["text"] for t in report["tasks"] for item in t["items"])
    markdown = (out / "report.md").read_text()
    assert "| mmlu |" in markdown and "| gsm8k |" in markdown
    lines = (out / "gsm8k.responses.jsonl").read_text().splitlines()
    cli("eval", "gsm8k", "--base-url", server.base_url, "--api-key", server.key, "--data-dir", str(DATA),
        "--limit", "6", "--out", str(out))
    assert (out / "gsm8k.responses.jsonl").read_text().splitlines() == lines  # resumed: nothing re-asked
    tasks = [t["task"] for t in json.loads((out / "report.json").read_text())["tasks"]]
    assert tasks == ["mmlu", "gsm8k"]  # a later run into the same folder keeps the earlier tasks
