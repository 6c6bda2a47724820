"""Run `ragcycle reindex --force --json` many times in a row on one data dir, with contenders
evaluated in parallel, and say whether any hung, failed or lost its JSON report.

    python scripts/stress_reindex.py [--runs 8] [--timeout 300] [--data DIR]

The corpus is the sample corpus; the contenders are the live config rebuilt (--force), a
chunking challenger (a build) and three query challengers on the live collection, all
evaluated side by side with MLflow's GenAI views on, as a new user's first reindexes are. Each
run's stdout must be one strict JSON object. Prints one JSON object: per run the exit code,
seconds, decision and whether the report parsed; and the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RAGCYCLE = Path(sys.executable).parent / "ragcycle"

CONFIG = """data_dir = "{data}"
progress = false

[generation]
backend = "extractive"

[evaluation]
mlflow_genai = true

[evaluation.judge]
backend = "none"

[lifecycle]
sources = ["{corpus}"]
golden_dataset = "{golden}"

[[lifecycle.candidates]]
name = "small-chunks"
chunking = {{strategy = "fixed", size = 400, overlap = 80}}

[[lifecycle.candidates]]
name = "k3"
retrieval = {{k = 3}}

[[lifecycle.candidates]]
name = "k8"
retrieval = {{k = 8}}

[[lifecycle.candidates]]
name = "lexical"
retrieval = {{mode = "lexical"}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take")
    parser.add_argument("--data", type=Path, help="data dir (default: a new temporary one)")
    args = parser.parse_args()
    data = (args.data or Path(tempfile.mkdtemp(prefix="stress-"))).resolve()
    data.mkdir(parents=True, exist_ok=True)
    config = data / "ragcycle.toml"
    config.write_text(
        CONFIG.format(
            data=data,
            corpus=REPO / "samples" / "corpus",
            golden=REPO / "samples" / "golden.jsonl",
        )
    )
    ingested = _run(["ingest", str(REPO / "samples" / "corpus")], config, args.timeout)
    runs = [_run(["reindex", "--force"], config, args.timeout) for _ in range(args.runs)]
    print(
        json.dumps(
            {
                "data_dir": str(data),
                "ingest": ingested,
                "runs": runs,
                "hung": sum(run["hung"] for run in runs),
                "failed": sum(run["exit"] not in (0, None) for run in runs),
                "without_json": sum(not run["json"] for run in runs),
            }
        )
    )


def _run(command: list[str], config: Path, timeout: float) -> dict[str, Any]:
    """One command with --json under a timeout: its exit, time and whether stdout parsed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    begun = time.monotonic()
    try:
        done = subprocess.run(
            [str(RAGCYCLE), *command, "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"exit": None, "hung": True, "json": False, "seconds": timeout}
    seconds = round(time.monotonic() - begun, 1)
    try:
        report = json.loads(done.stdout, parse_constant=_refuse)
    except ValueError:
        report = None
    return {
        "exit": done.returncode,
        "hung": False,
        "json": isinstance(report, dict),
        "seconds": seconds,
        "decision": report.get("decision") if isinstance(report, dict) else None,
        "version": report.get("version") if isinstance(report, dict) else None,
        "error": report.get("error") if isinstance(report, dict) else done.stderr[-300:],
    }


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


if __name__ == "__main__":
    main()
