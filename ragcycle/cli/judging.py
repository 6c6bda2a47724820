"""``ragcycle judge``: grade answers with the configured judge, and say how far to trust it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ragcycle.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    console,
    echo_json,
    fail,
    settings_for,
)
from ragcycle.errors import RagcycleError


@app.command("judge")
def judge_(
    file: Annotated[
        Path, typer.Argument(help="JSONL of answers to grade.", exists=True, dir_okay=False)
    ],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Grade answers with the configured judge (evaluation.judge): scores per row, a summary,
    and the judge's accuracy on the calibration set, to grade another system's answers or to
    check the judge itself.

    Each JSONL line: `{"question", "answer", "reference" (optional), "contexts" (optional list
    of strings)}`; rows labelled `correct`, `supported`, `relevant` (true/false) are also
    compared with their labels. A criterion whose judge scores below
    evaluation.judge.min_accuracy on the calibration set is marked unreliable.
    """
    settings = settings_for(config)
    from tasks.evaluation.calibration import (
        grade,
        grade_summary,
        judge_calibration,
        judge_summary,
        load_graded_rows,
    )
    from tasks.evaluation.judges import JUDGE_CRITERIA
    from tasks.generation.backends import judge_from_settings

    judging = settings.evaluation.judge
    try:
        rows = load_graded_rows(file)
        judge = judge_from_settings(settings)
        calibration = judge_calibration(judge, judging, settings.data_dir)
        if judge is not None:
            graded = grade(
                rows, judge, context_chars=judging.context_chars, formulation=judging.formulation
            )
        else:
            graded = [{name: math.nan for name in JUDGE_CRITERIA} for _ in rows]
    except RagcycleError as exc:
        raise fail(exc) from None
    result = {
        "judge": judge_summary(judge, judging.formulation, calibration),
        "rows": [
            {"line": row.line, "scores": {name: verdicts.get(name) for name in JUDGE_CRITERIA}}
            for row, verdicts in zip(rows, graded, strict=True)
        ],
        "summary": grade_summary(rows, graded),
    }
    if as_json:
        echo_json(result)
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    judge = result["judge"]
    if judge is None:
        console.print("[yellow]The judge is off (evaluation.judge.backend = none).[/yellow]")
        return
    criteria = [name for name in result["summary"] if name.startswith("judge_")]
    table = Table("line", *[name.removeprefix("judge_") for name in criteria])
    for row in result["rows"]:
        table.add_row(str(row["line"]), *[_cell(row["scores"][name]) for name in criteria])
    console.print(table)
    for name in criteria:
        figures = result["summary"][name]
        console.print(f"{name}: mean {_cell(figures['mean'])} over {figures['graded']} rows")
    console.print(f"judge: {judge['backend']}:{judge['model']} ({judge['formulation']})")
    calibration = judge["calibration"]
    if calibration is None:
        console.print("[yellow]not calibrated (no calibration set): unreliable[/yellow]")
        return
    for name, figures in calibration["criteria"].items():
        trusted = "reliable" if name not in judge["unreliable"] else "[red]unreliable[/red]"
        console.print(
            f"  {name}: pairwise accuracy {_cell(figures['pairwise_accuracy'])}, agreement"
            f" {_cell(figures['agreement'])} on the calibration set: {trusted}"
        )


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"
