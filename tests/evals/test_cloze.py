"""`magistral eval mmlu_cloze` against the real server: option scores equal the summed logprobs
of the option's tokens after the context, and the report names its formulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magistral.client import Client
from magistral.evals.cloze import ClozeItem, option_scores, pick
from tests.conftest import Server, cli

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_option_scores_are_the_options_token_logprobs(fp32_server: Server) -> None:
    server = fp32_server  # fp32: the same numbers whether the options come together or alone
    item = ClozeItem(id="x", group="g", context="Question: What color is the sky on a clear day?\nAnswer:",
                     options=[" blue", " green with purple stripes"], gold=0)
    with Client(server.base_url, server.key) as client:
        scores = option_scores(client, "magistral-medium-latest", item)
    for option, score in zip(item.options, scores, strict=True):
        context = server.post("/tokenize", {"prompt": item.context}).json()["tokens"]
        full = server.post("/tokenize", {"prompt": item.context + option}).json()["tokens"]
        assert full[:len(context)] == context
        body = {"model": "magistral-medium-latest", "prompt": [full], "max_tokens": 0, "echo": True,
                "logprobs": 0}
        logprobs = server.post("/v1/completions", body).json()["choices"][0]["logprobs"]["token_logprobs"]
        assert score["tokens"] == len(full) - len(context)
        assert score["logprob"] == pytest.approx(sum(logprobs[len(context):]), abs=1e-4)
        assert score["chars"] == len(option) - 1
    assert pick(scores, item.options, "sum") == 0  # the plain answer is far likelier than the long one
    long_shot = [{"logprob": -4.0, "tokens": 1}, {"logprob": -9.0, "tokens": 2}]
    assert pick(long_shot, [" ab", " abcdefgh"], "sum") == 0
    assert pick(long_shot, [" ab", " abcdefgh"], "char") == 1  # -9/9 beats -4/3
    assert pick(long_shot, [" ab", " abcdefgh"], "char_nospace") == 1  # -9/8 beats -4/2
    assert pick(long_shot, [" ab", " abcdefgh"], "token") == 0  # -4 per token beats -4.5


@pytest.mark.skipif(not (DATA / "mmlu").is_dir(), reason="../shared/data is not here")
def test_eval_cli_runs_mmlu_cloze(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("eval", "mmlu_cloze", "--base-url", server.base_url, "--api-key", server.key,
                 "--data-dir", str(DATA), "--limit", "57", "--out", str(out))
    assert result.stdout.strip() == str(out)
    [task] = json.loads((out / "report.json").read_text())["tasks"]
    assert task["task"] == "mmlu_cloze" and len(task["items"]) == 57 and len(task["by_group"]) == 57
    assert all(item["error"] is None and item["answer"] in "ABCD" for item in task["items"])
    settings = task["settings"]
    assert "cloze" in settings["formulation"] and settings["wall_time_s"] > 0
    assert settings["accuracy_char"] == task["accuracy"]
    assert {"accuracy_sum", "accuracy_token", "accuracy_char_nospace"} <= set(settings)
    assert "| mmlu_cloze |" in (out / "report.md").read_text()
