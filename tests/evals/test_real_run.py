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


def test_eval_latency_reports_percentiles(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "latency"
    cli("eval", "latency", "--base-url", server.base_url, "--api-key", server.key, "--out", str(out),
        "--latency-levels", "1,2", "--latency-rounds", "2")
    latency = json.loads((out / "report.json").read_text())["latency"]["text"]
    assert set(latency) == {"1", "2"} and latency["2"]["requests"] == 4
    for level in latency.values():
        assert 0 < level["ttft_p50_ms"] <= level["ttft_p95_ms"] <= level["ttft_p99_ms"] < 60_000
        assert level["aggregate_tokens_per_s"] > 0 and level["tokens_per_s_p50"] > 0
    assert "## Latency, text prompt (claimed: under 200 ms)" in (out / "report.md").read_text()


@pytest.mark.skipif(not (DATA / "scienceqa").is_dir(), reason="../shared/data is not here")
def test_eval_cli_runs_code_and_image_tasks_and_rebuilds_reports(server: Server, vision_server: Server,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    cli("eval", "humaneval", "--base-url", server.base_url, "--api-key", server.key, "--limit", "3",
        "--max-tokens", "96", "--out", str(out), "--no-progress")
    image = DATA / "scienceqa" / "images" / "test" / "5" / "image.png"
    cli("eval", "scienceqa,puzzlevqa,charts,latency", "--base-url", vision_server.base_url, "--api-key",
        vision_server.key, "--model", "tiny-mistral3", "--data-dir", str(DATA), "--limit", "4",
        "--max-tokens", "8", "--out", str(out), "--latency-levels", "1,2", "--latency-rounds", "1",
        "--image", str(image))
    report = json.loads((out / "report.json").read_text())
    tasks = {t["task"]: t for t in report["tasks"]}
    assert set(tasks) == {"humaneval", "scienceqa", "puzzlevqa", "charts"}
    for task in tasks.values():
        assert len(task["items"]) in (3, 4) and not any(item["error"] for item in task["items"])
    assert all(item["answer"] for item in tasks["humaneval"]["items"])  # each ran in the sandbox
    assert tasks["scienceqa"]["data"].startswith("ScienceQA")
    assert set(report["latency"]) == {"text", "image"}
    assert len(tasks["puzzlevqa"]["by_group"]) == 4  # the limit spreads over puzzle kinds
    assert set(tasks["charts"]["by_group"]) == {"value", "tallest", "shortest", "sum"}  # generated, by kind
    assert tasks["charts"]["data"].startswith("generated")
    for name in ("report.md", "scienceqa.png", "puzzlevqa.png", "latency_text.png", "latency_image.png"):
        (out / name).unlink()
    assert cli("eval", "report", str(out)).stdout.strip() == str(out)
    markdown = (out / "report.md").read_text()
    assert "| humaneval |" in markdown and "| scienceqa |" in markdown and "79.4" in markdown
    assert "## Latency, image prompt (claimed: under 500 ms)" in markdown
    assert all((out / name).stat().st_size > 1000 for name in ("puzzlevqa.png", "latency_image.png"))
