"""Send a bounded stream of real requests to a running ``ragcycle api``: the golden set's
questions (answerable and not) in a seeded random order, and feedback on a share of the
answers, as users would give it. This is the traffic that fills the MLflow Overview tab of the
serving experiment, Prometheus's series and the monitor's production figures.

    ragcycle api &                                    # after `make demo`, on its data dir
    python scripts/traffic.py [--requests 300] [--url http://127.0.0.1:8000] [--json]

The key is the API's own (``api.api_key`` or the data dir's key file, as ``ragcycle api``
finds it). Feedback: ``down`` on an answer the guardrails failed or that abstained on an
answerable question, ``up`` otherwise, on ``--feedback-share`` of the answers. Prints a summary
(status codes, verdicts, latency percentiles, feedback sent); ``--json`` as one object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def send_traffic(
    client: httpx.Client,
    questions: list[tuple[str, bool]],
    requests: int,
    *,
    feedback_share: float = 0.3,
    seed: int = 0,
) -> dict[str, Any]:
    """``requests`` questions to ``/ask`` (cycling through ``questions``, each (text,
    answerable), shuffled), with feedback on a share of the answers; the tally."""
    chooser = random.Random(seed)
    order = [questions[i % len(questions)] for i in range(requests)]
    chooser.shuffle(order)
    statuses: Counter[int] = Counter()
    verdicts: Counter[str] = Counter()
    feedback: Counter[str] = Counter()
    latencies: list[float] = []
    started = time.perf_counter()
    for question, answerable in order:
        begun = time.perf_counter()
        response = client.post("/ask", json={"question": question})
        latencies.append(time.perf_counter() - begun)
        statuses[response.status_code] += 1
        if response.status_code != 200:
            continue
        body = response.json()
        status = body["guardrails"]["status"]
        verdicts[status] += 1
        if chooser.random() < feedback_share:
            rating = "down" if status == "fail" or (answerable and body.get("abstained")) else "up"
            sent = client.post("/feedback", json={"query_id": body["query_id"], "rating": rating})
            feedback[rating if sent.status_code == 200 else f"refused {sent.status_code}"] += 1
    return {
        "requests": requests,
        "seconds": round(time.perf_counter() - started, 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "verdicts": dict(sorted(verdicts.items())),
        "feedback": dict(sorted(feedback.items())),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(_p95(latencies), 3) if latencies else None,
    }


def _p95(values: list[float]) -> float:
    from tasks.evaluation.stats import percentile

    return percentile(values, 95)


def golden_questions(path: Path) -> list[tuple[str, bool]]:
    from tasks.evaluation.golden import load_golden

    return [(item.question, item.answerable) for item in load_golden(path).items]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running API")
    parser.add_argument("--requests", type=int, default=300, help="questions to send")
    parser.add_argument("--golden", type=Path, default=REPO / "samples" / "golden.jsonl")
    parser.add_argument("--feedback-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", help="ragcycle.toml of the API's data dir (its key)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from ragcycle.api.security import resolve_key
    from ragcycle.settings import load_settings

    key = resolve_key(load_settings(args.config))
    headers = {"X-API-Key": key.value} if key is not None else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
        try:
            tally = send_traffic(
                client,
                golden_questions(args.golden),
                args.requests,
                feedback_share=args.feedback_share,
                seed=args.seed,
            )
        except httpx.TransportError as exc:
            print(
                f"cannot reach the API at {args.url} ({exc}): is `ragcycle api` running?",
                file=sys.stderr,
            )
            return 2
    if args.json:
        print(json.dumps(tally))
    else:
        for name, value in tally.items():
            print(f"{name:>14}: {value}")
    return 0 if set(tally["statuses"]) <= {"200"} else 1


if __name__ == "__main__":
    sys.exit(main())
