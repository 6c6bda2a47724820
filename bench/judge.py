"""Judge calibration benchmark: each local model present, in each formulation, on the labelled
calibration set (samples/judge_calibration.jsonl), in one command.

Per judge: pairwise accuracy, tie share and agreement with the labels for each criterion, and
seconds per graded row (three verdicts). The target for a default judge is pairwise accuracy
>= 0.9 on correctness; below evaluation.judge.min_accuracy a criterion is kept out of decisions.

    python bench/judge.py [--models smollm2-135m,...] [--formulations verdict,score]
                          [--rows 120] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "samples" / "judge_calibration.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", help="comma-separated catalogue models (default: all pulled)")
    parser.add_argument("--formulations", default="verdict,score")
    parser.add_argument("--rows", type=int, default=0, help="grade the first N rows (0: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # llama.cpp and Prefect may print
        result = run(args)
    print(json.dumps(result) if args.json else format_result(result))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragcycle.settings import load_settings
    from tasks.evaluation.calibration import calibration_figures, grade, load_graded_rows
    from tasks.generation.backends import judge_from_settings
    from tasks.models import present

    rows = load_graded_rows(CALIBRATION)
    rows = rows[: args.rows] if args.rows else rows
    models_dir = load_settings().models_path
    models = sorted(present(models_dir))
    if args.models:
        models = [name for name in models if name in args.models.split(",")]
    judges = []
    for model in models:
        settings = load_settings(
            config_file=None,
            data_dir=Path(tempfile.mkdtemp(prefix="ragcycle-bench-judge-")),
            models_dir=models_dir,
            evaluation={"judge": {"backend": "local", "model": model}},
        )
        judge = judge_from_settings(settings)
        assert judge is not None
        for formulation in args.formulations.split(","):
            started = time.perf_counter()
            graded = grade(rows, judge, formulation=formulation)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            judges.append(
                {
                    "model": model,
                    "formulation": formulation,
                    "seconds_per_row": seconds / len(rows),
                    "criteria": calibration_figures(rows, graded),
                }
            )
    return {"calibration_set": CALIBRATION.name, "rows": len(rows), "judges": judges}


def format_result(result: dict[str, Any]) -> str:
    lines = [f"{result['rows']} labelled rows of {result['calibration_set']}"]
    lines.append(
        f"{'model':<22} {'formulation':<11} {'s/row':>6}  "
        "correctness pair/agree/ties  faithfulness pair/agree  relevance pair/agree"
    )
    for judge in result["judges"]:
        c = judge["criteria"]
        cells = [
            f"{c['judge_correctness']['pairwise_accuracy']:.3f}/"
            f"{c['judge_correctness']['agreement']:.3f}/{c['judge_correctness']['tie_share']:.2f}",
            f"{c['judge_faithfulness']['pairwise_accuracy']:.3f}/"
            f"{c['judge_faithfulness']['agreement']:.3f}",
            f"{c['judge_relevance']['pairwise_accuracy']:.3f}/"
            f"{c['judge_relevance']['agreement']:.3f}",
        ]
        lines.append(
            f"{judge['model']:<22} {judge['formulation']:<11} {judge['seconds_per_row']:>6.2f}  "
            f"{cells[0]:<28} {cells[1]:<24} {cells[2]}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
