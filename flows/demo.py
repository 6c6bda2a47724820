"""The demo: the whole lifecycle on embedded defaults, as a walkthrough a person can follow.

1. build and promote the first index version, 2. evaluate it (MLflow), 3. add a document the
golden set asks about, 4. the monitor notices the corpus drift and 5. triggers a reindex that is
evaluated against the live version and promoted, 6. the evaluation recovers. It composes the
flows as a user would call them, on a copy of the corpus, and tells what happens through a
:class:`Narrator`, so the face that runs it (the CLI) decides how it looks.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flows.evaluate import EvaluateRequest, evaluate
from flows.monitor import MonitorRequest, monitor, quality_plot_path
from flows.reindex import ReindexRequest, reindex
from ragcycle.errors import DatasetError
from ragcycle.settings import Settings
from tasks.tracking.plots import plot_quality_by_version

__all__ = ["DEMO_COLLECTION", "DemoResult", "Narrator", "hold_back_one", "run_demo"]

DEMO_COLLECTION = "demo"
SHOWN_METRICS = (
    "hit_rate_at_5",
    "mrr",
    "answer_similarity",
    "answer_contains_key",
    "abstained_when_unanswerable",
    "judge_faithfulness",
    "judge_correctness",
)
PLOTTED_METRICS = ["hit_rate_at_5", "mrr", "answer_similarity"]


class Narrator(Protocol):
    """Where the walkthrough reports its steps."""

    def step(self, title: str) -> None: ...

    def say(self, text: str) -> None: ...


@dataclass(frozen=True)
class DemoResult:
    """What the demo left behind, for the closing "where to look" lines."""

    workdir: Path
    plot: Path | None
    before: dict[str, float]
    after: dict[str, float]
    monitor_plot: Path | None = None  # quality over the monitor's runs (one point in a demo)


def hold_back_one(corpus: Path, held_back: Path, dataset: Path) -> Path:
    """Move out the document most golden questions cite, so adding it back shows a recovery."""
    cited: Counter[str] = Counter()
    for line in dataset.read_text().splitlines():
        if line.strip():
            cited.update(json.loads(line).get("expected_sources") or [])
    for name, _ in cited.most_common():
        matches = sorted(corpus.rglob(name))
        if matches:
            target = matches[0]
            target.rename(held_back / target.name)
            return target
    raise DatasetError(f"no document of {corpus} is cited by {dataset}")


def _metrics_line(title: str, metrics: dict[str, Any]) -> str:
    shown = [name for name in SHOWN_METRICS if name in metrics]
    return f"{title}: " + ", ".join(f"{name} {metrics[name]:.3f}" for name in shown)


def run_demo(
    settings: Settings,
    corpus: Path,
    dataset: Path,
    narrator: Narrator,
    config_file: str | None = None,
) -> DemoResult:
    """Run the walkthrough in ``<data_dir>/demo`` on a copy of ``corpus``; a re-run starts over."""
    workdir = settings.data_dir.resolve() / "demo"
    live_corpus, held_back = workdir / "corpus", workdir / "held-back"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(corpus, live_corpus)
    held_back.mkdir(parents=True)
    moved = hold_back_one(live_corpus, held_back, dataset)
    overrides: dict[str, Any] = {
        "lifecycle": {"sources": [str(live_corpus)], "golden_dataset": str(dataset)},
        "chroma": {"collection": DEMO_COLLECTION},
    }

    narrator.step(f"1. First index version (without {moved.name})")
    first = reindex(
        ReindexRequest(
            reason="demo: initial build", force=True, config_file=config_file, overrides=overrides
        )
    )
    narrator.say(f"decision: {first['decision']} (version {first.get('version')})")
    narrator.step("2. Evaluate the live version (logged to MLflow)")
    before = evaluate(
        EvaluateRequest(dataset=str(dataset), config_file=config_file, overrides=overrides)
    )
    narrator.say(_metrics_line("before", before["metrics"]))
    narrator.step(f"3. The corpus changes: {moved.name} arrives")
    shutil.move(str(held_back / moved.name), moved)
    narrator.step("4-5. The monitor notices and triggers the reindex")
    checked = monitor(MonitorRequest(config_file=config_file, overrides=overrides))
    narrator.say(f"monitor: {checked['decision']}: " + "; ".join(checked["reasons"]))
    triggered = checked.get("triggered") or {}
    narrator.say(f"reindex: {triggered.get('decision')} (version {triggered.get('version')})")
    narrator.step("6. Evaluate again")
    after = evaluate(
        EvaluateRequest(dataset=str(dataset), config_file=config_file, overrides=overrides)
    )
    narrator.say(_metrics_line("before", before["metrics"]))
    narrator.say(_metrics_line("after ", after["metrics"]))
    promotions = [first, triggered]
    plot = plot_quality_by_version(
        settings.mlflow_tracking_uri,
        after["experiment"],
        PLOTTED_METRICS,
        workdir / "quality_by_version.png",
        promoted=[int(p["version"]) for p in promotions if p.get("decision") == "promoted"],
        log_to_run=after["run_id"],
    )
    demo_index = settings.chroma.model_copy(update={"collection": DEMO_COLLECTION})
    over_time = quality_plot_path(settings.model_copy(update={"chroma": demo_index}))
    return DemoResult(
        workdir,
        plot,
        before["metrics"],
        after["metrics"],
        over_time if over_time.exists() else None,
    )
