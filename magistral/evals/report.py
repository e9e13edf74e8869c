"""Reports of a run: JSON (every item), Markdown (the release's table layout), a PNG per task."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from magistral.evals.base import TaskReport


def write_reports(reports: list[TaskReport], run_dir: Path, model: str,
                  latency: dict | None = None, data_version: dict[str, str] | None = None) -> None:
    """report.json (merged with the tasks of earlier runs into the same folder), report.md, PNGs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tasks = [{"task": r.task, "settings": r.settings, "data": (data_version or {}).get(r.task),
              "accuracy": r.accuracy,
              "macro_accuracy": r.macro_accuracy(), "by_group": r.by_group(),
              "items": [asdict(x) for x in r.results]} for r in reports]
    previous = run_dir / "report.json"
    if previous.is_file():  # tasks run earlier into the same folder stay in the report
        done = {t["task"] for t in tasks}
        tasks = [t for t in json.loads(previous.read_text())["tasks"] if t["task"] not in done] + tasks
    payload = {"model": model, "tasks": tasks}
    if previous.is_file() and latency is None:
        latency = json.loads(previous.read_text()).get("latency")
    if latency:
        payload["latency"] = latency
    (run_dir / "report.json").write_text(json.dumps(payload, indent=1))
    render(run_dir)


def render(run_dir: Path) -> None:
    """report.md and the plots, from report.json (`magistral eval report RUN_DIR`)."""
    payload = json.loads((run_dir / "report.json").read_text())
    (run_dir / "report.md").write_text(markdown(payload))
    plot(payload, run_dir)


def markdown(payload: dict) -> str:
    from magistral.evals.cloze import CLOZE_TASKS
    from magistral.evals.tasks import TASKS
    lines = [f"# Evaluation of `{payload['model']}`", "",
             "| benchmark | our score | claimed (Magistral Medium 1.2; cloze: the default model's card) "
             "| items |", "|---|---|---|---|"]
    for task in payload["tasks"]:
        claimed = TASKS[task["task"]]().claimed if task["task"] in TASKS else \
            CLOZE_TASKS[task["task"]][1] if task["task"] in CLOZE_TASKS else None
        lines.append(f"| {task['task']} | {100 * task['accuracy']:.1f} | "
                     f"{'—' if claimed is None else f'{claimed:.1f}'} | {len(task['items'])} |")
    for task in payload["tasks"]:
        settings = task["settings"]
        if "formulation" in settings:
            others = ", ".join(f"{key.removeprefix('accuracy_')} {100 * value:.1f}"
                               for key, value in settings.items() if key.startswith("accuracy_"))
            lines += ["", f"{task['task']}: {settings['formulation']} ({others}; "
                      f"{settings.get('wall_time_s', '?')} s)."]
    for task in payload["tasks"]:
        if len(task["by_group"]) > 1:
            lines += ["", f"## {task['task']} by subject (macro {100 * task['macro_accuracy']:.1f})", "",
                      "| subject | accuracy |", "|---|---|"]
            lines += [f"| {g} | {100 * a:.1f} |" for g, a in task["by_group"].items()]
    for prompt, levels in (payload.get("latency") or {}).items():
        claim = 500 if prompt == "image" else 200
        lines += ["", f"## Latency, {prompt} prompt (claimed: under {claim} ms)", "",
                  "| concurrent | requests | TTFT p50 | p95 | p99 | tokens/s p50 | aggregate tokens/s |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {level} | {r['requests']} | {r['ttft_p50_ms']:.0f} ms | {r['ttft_p95_ms']:.0f} ms | "
                  f"{r['ttft_p99_ms']:.0f} ms | {r['tokens_per_s_p50']:.1f} | "
                  f"{r['aggregate_tokens_per_s']:.1f} |" for level, r in levels.items()]
    settings = payload["tasks"][0]["settings"] if payload["tasks"] else {}
    if settings:
        lines += ["", f"Sampling: temperature {settings.get('temperature')}, max_tokens "
                  f"{settings.get('max_tokens')}, seed {settings.get('seed')}."]
    return "\n".join(lines) + "\n"


def plot(payload: dict, run_dir: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: pip install 'magistral[bench]'
        return
    for task in payload["tasks"]:
        groups = task["by_group"]
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(groups) + 2), 4))
        ax.bar(range(len(groups)), [100 * v for v in groups.values()])
        ax.set_xticks(range(len(groups)), list(groups), rotation=90, fontsize=6)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{task['task']}: {100 * task['accuracy']:.1f}% on {len(task['items'])} items")
        fig.tight_layout()
        fig.savefig(run_dir / f"{task['task']}.png", dpi=110)
        plt.close(fig)
    for prompt, levels in (payload.get("latency") or {}).items():
        samples = {level: r.get("ttft_samples_ms") for level, r in levels.items()}
        if not all(samples.values()):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.boxplot(list(samples.values()))
        ax.set_xticks(range(1, len(samples) + 1), [f"{level} concurrent" for level in samples])
        ax.set_ylabel("time to first token (ms)")
        ax.set_title(f"TTFT, {prompt} prompt")
        fig.tight_layout()
        fig.savefig(run_dir / f"latency_{prompt}.png", dpi=110)
        plt.close(fig)
