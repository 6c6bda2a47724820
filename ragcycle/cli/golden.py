"""``golden candidates`` and ``golden review``: production questions into the golden set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.prompt import Prompt
from rich.table import Table

from ragcycle.cli.common import (
    ConfigOption,
    JsonOption,
    console,
    echo_json,
    fail,
    golden_app,
    settings_for,
)
from ragcycle.errors import ConfigError, RagcycleError
from ragcycle.settings import Settings

DatasetOption = Annotated[
    Path | None,
    typer.Option("--dataset", help="Golden JSONL to grow (default: lifecycle.golden_dataset)."),
]


def _candidates(settings: Settings, limit: int, dataset: Path | None) -> list[dict[str, Any]]:
    from tasks.evaluation.golden import load_golden
    from tasks.query_log import QueryLog, golden_candidates, question_key

    log = QueryLog(settings.query_log_path)
    skip = log.reviewed()
    if dataset is not None and dataset.exists():
        skip |= {question_key(item.question) for item in load_golden(dataset).items}
    return golden_candidates(
        log.recent(limit=100_000),
        log.ratings(),
        min_score=settings.generation.min_score,
        limit=limit,
        skip=skip,
    )


@golden_app.command("candidates")
def candidates(
    limit: Annotated[int, typer.Option(help="At most this many questions.")] = 50,
    dataset: DatasetOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Questions from production worth adding to the golden set: answers rated down, answers
    the guardrails warned about or withheld, and questions retrieval found nothing close for
    (best score under generation.min_score). Merged by question, most frequent first; questions
    already reviewed or already in the golden set are left out."""
    settings = settings_for(config)
    found = _candidates(settings, limit, dataset or settings.lifecycle.golden_dataset)
    if as_json:
        echo_json(found)
        return
    table = Table("count", "question", "why", "latest query_id", title="Golden-set candidates")
    for entry in found:
        table.add_row(
            str(entry["count"]),
            entry["question"],
            ", ".join(entry["reasons"]),
            str(entry["query_id"]),
        )
    console.print(table)


@golden_app.command("review")
def review(
    limit: Annotated[int, typer.Option(help="At most this many questions.")] = 20,
    dataset: DatasetOption = None,
    config: ConfigOption = None,
) -> None:
    """Walk through the candidates: accept (with the expected answer and sources), edit the
    question first, reject, or skip. Accepted questions become a new version of the golden
    file (the old one is archived, the manifest records every version's digest); rejected
    ones are never proposed again. The next reindex gate measures what users asked."""
    from tasks.evaluation.growth import publish_version
    from tasks.query_log import QueryLog

    settings = settings_for(config)
    target = dataset or settings.lifecycle.golden_dataset
    if target is None:
        raise fail(
            ConfigError("no golden set to grow: pass --dataset or set lifecycle.golden_dataset")
        )
    log = QueryLog(settings.query_log_path)
    queue = _candidates(settings, limit, target)
    if not queue:
        console.print("No candidates: nothing users asked needs review.")
        return
    accepted, asked, rejected = [], [], 0
    for number, entry in enumerate(queue, start=1):
        record = log.get(int(entry["query_id"])) or {}
        # What every user who asked it said, not only the latest.
        record["feedback"] = [
            note
            for query_id in entry["query_ids"]
            for note in (log.get(query_id) or {}).get("feedback", [])
        ]
        console.print(_panel(entry, record, number, len(queue)))
        choice = Prompt.ask(
            "[a]ccept  [e]dit  [r]eject  [s]kip  [q]uit", choices=list("aersq"), default="s"
        )
        if choice == "q":
            break
        if choice == "r":
            log.add_review(entry["question"], "rejected")
            rejected += 1
        elif choice in "ae":
            accepted.append(_accept(entry, record, edit=choice == "e"))
            asked.append(entry["question"])
    if not accepted:
        console.print(f"Nothing accepted ({rejected} rejected); {target} is unchanged.")
        return
    try:
        version = publish_version(target, accepted)
    except RagcycleError as exc:
        raise fail(exc) from None
    for question in [*asked, *(item.question for item in accepted)]:
        log.add_review(question, "accepted")
    console.print(
        f"{target} is now version {version.version}: {version.rows} questions"
        f" (+{version.added}), digest {version.digest}; {rejected} rejected."
    )


def _panel(entry: dict[str, Any], record: dict[str, Any], number: int, total: int) -> Panel:
    lines = [
        f"[bold]{entry['question']}[/bold]",
        f"asked {entry['count']}x · {', '.join(entry['reasons'])} · query {entry['query_id']}",
        "",
        f"served: {record.get('answer') or '-'}",
        "sources: " + ", ".join(_cited(record)) if record.get("sources") else "sources: -",
    ]
    for note in record.get("feedback", []):
        lines.append(f"feedback: {note['rating']} {note.get('comment') or ''}".rstrip())
        if note.get("expected_answer"):
            lines.append(f"user's expected answer: {note['expected_answer']}")
    return Panel("\n".join(lines), title=f"candidate {number} of {total}")


def _cited(record: dict[str, Any]) -> list[str]:
    return [
        f"{s['source']} p.{s['page']}" if s.get("page") else str(s["source"])
        for s in record.get("sources") or []
    ]


def _accept(entry: dict[str, Any], record: dict[str, Any], *, edit: bool) -> Any:
    from tasks.evaluation.growth import Reviewed

    question = Prompt.ask("question", default=entry["question"]) if edit else entry["question"]
    suggested = next(
        (n["expected_answer"] for n in record.get("feedback", []) if n.get("expected_answer")), ""
    )
    answer = Prompt.ask(
        "expected answer (empty: the corpus cannot answer it)", default=suggested or ""
    )
    served = sorted({str(s["source"]) for s in record.get("sources") or []})
    sources = Prompt.ask(
        "expected sources, comma-separated", default=",".join(served) if answer else ""
    )
    return Reviewed(
        question=question.strip(),
        expected_answer=answer.strip() or None,
        expected_sources=[s.strip() for s in sources.split(",") if s.strip()],
        query_id=int(entry["query_id"]),
    )
