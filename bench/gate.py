"""The promotion gate's error rates, by simulation: how often it promotes a challenger that is no
better than the live version (A/A), and how often it promotes one that is (A/B).

    python bench/gate.py [--sims 400] [--seed 0] [--json]

Each simulated golden set has n questions, each with its own difficulty, scored on the default
gate's three metric types: a 0/1 hit rate, a reciprocal rank (MRR), and a similarity in [0, 1].
A version's score on a question is drawn from that question's distribution; a challenger
repeats the live version's outcome on a question with probability ``AGREEMENT`` (two configs of
one index mostly retrieve the same chunks) and draws afresh otherwise, so scores are paired the
way real evaluations are.

- A/A: K challengers (K = 1, 3, 5) drawn from the live version's own distributions, over golden
  sets of 20, 50, 100 and 300 questions. ``false_promotion`` is the share of simulated reindexes
  that promote any of them (target: <= 0.05 for every K).
- A/B: one challenger better on every guarded metric by that metric's tolerance (the smallest
  gain the gate is configured to care about) and, for context, by ``--effect``. ``power`` is the
  share promoted, by question count.

The gate is the one ``reindex`` runs (:func:`tasks.promotion.gate` with the default settings);
``baseline`` is the gate as it was before (paired percentile bootstrap, any metric's lower bound
above 0 promotes, flaky questions of both sides left out), run on the same simulated sets.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ragcycle.settings import load_settings
from tasks.promotion import Evaluated, GateStats, gate, gate_names

AGREEMENT = 0.7
K_RANGE = 10  # ranks a retrieval can place the relevant document at (MRR is 0 beyond)
CHALLENGERS = (1, 3, 5)
QUESTIONS = (20, 50, 100, 300)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sims", type=int, default=400, help="simulated reindexes per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--effect", type=float, default=0.1, help="a larger gain, for context")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings(config_file=None, progress=False)
    tolerances, _ = gate_names(settings.lifecycle, "k")
    stats = GateStats(
        samples=settings.evaluation.bootstrap_samples,
        confidence=settings.lifecycle.gate_confidence,
        power=settings.lifecycle.gate_power,
        min_questions=settings.lifecycle.gate_min_questions,
    )
    rng = np.random.default_rng(args.seed)
    begun = time.perf_counter()
    current = _rates(_current(tolerances, stats), tolerances, args, rng)
    previous = _rates(_previous(tolerances), tolerances, args, rng)
    report: dict[str, Any] = {
        "gate": {"tolerances": tolerances, "confidence": stats.confidence},
        "sims": args.sims,
        "agreement": AGREEMENT,
        **current,
        "baseline": {key: previous[key] for key in ("false_promotion", "power", "power_at_effect")},
        "seconds": round(time.perf_counter() - begun, 1),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"A/A false promotion (target <= {1 - stats.confidence:.2f}), gate vs baseline:")
    for k in CHALLENGERS:
        print(
            f"  K={k}: {report['false_promotion'][str(k)]:.3f}"
            f"  (baseline {report['baseline']['false_promotion'][str(k)]:.3f})"
        )
    print("A/B power at the tolerance / at the larger effect, gate vs baseline:")
    for n in QUESTIONS:
        print(
            f"  n={n}: {report['power'][str(n)]:.3f} / {report['power_at_effect'][str(n)]:.3f}"
            f"  (baseline {report['baseline']['power'][str(n)]:.3f})"
        )


Rule = Callable[[list[Evaluated], Evaluated], bool]


def _rates(
    rule: Rule, tolerances: dict[str, float], args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    """False promotion by challenger count (and by n), power by n, for one rule."""
    false_by_k: dict[str, float] = {}
    false_by_cell: dict[str, float] = {}
    for k in CHALLENGERS:
        promoted = 0
        for n in QUESTIONS:
            hits = sum(
                rule(*_reindex(rng, n, [dict.fromkeys(tolerances, 0.0)] * k))
                for _ in range(args.sims)
            )
            false_by_cell[f"{k}x{n}"] = hits / args.sims
            promoted += hits
        false_by_k[str(k)] = promoted / (args.sims * len(QUESTIONS))
    power = {}
    at_effect = {}
    for n in QUESTIONS:
        power[str(n)] = _share(rule, rng, n, dict(tolerances), args.sims)
        at_effect[str(n)] = _share(rule, rng, n, dict.fromkeys(tolerances, args.effect), args.sims)
    return {
        "false_promotion": false_by_k,
        "false_promotion_by_questions": false_by_cell,
        "power": power,
        "power_at_effect": at_effect,
        "effect": args.effect,
    }


def _share(
    rule: Rule, rng: np.random.Generator, n: int, gain: dict[str, float], sims: int
) -> float:
    return sum(rule(*_reindex(rng, n, [gain])) for _ in range(sims)) / sims


def _reindex(
    rng: np.random.Generator, n: int, gains: Sequence[dict[str, float]]
) -> tuple[list[Evaluated], Evaluated]:
    """One simulated golden set: the live version and a challenger per entry of ``gains``.

    Scores come from uniforms through each metric's inverse distribution; a challenger shares
    the live version's uniforms on a question with probability ``AGREEMENT`` (common random
    numbers), so a gain raises its scores where it agrees and A/A pairs are as correlated as
    A/B ones."""
    difficulty = {
        "hit_rate_at_k": rng.beta(2.0, 1.2, n),  # chance the expected source is retrieved
        "mrr": rng.beta(2.0, 1.2, n),  # same; its rank then geometric
        "answer_similarity": rng.beta(5.0, 3.0, n),  # the answer's typical closeness
    }
    uniforms = rng.random((3, n))
    live = Evaluated("live", _scores(difficulty, uniforms, {}), {})
    challengers = []
    for i, gain in enumerate(gains):
        agree = rng.random(n) < AGREEMENT
        own = np.where(agree, uniforms, rng.random((3, n)))
        challengers.append(
            Evaluated(f"c{i}", _scores(difficulty, own, gain), {}, requires_improvement=True)
        )
    return challengers, live


def _scores(
    difficulty: dict[str, np.ndarray], u: np.ndarray, gain: dict[str, float]
) -> dict[str, dict[str, float]]:
    hit_q = np.clip(difficulty["hit_rate_at_k"] + gain.get("hit_rate_at_k", 0.0), 0, 1)
    found_q = np.clip(difficulty["mrr"] + gain.get("mrr", 0.0), 0, 1)
    rank_p = np.clip(found_q, 0.05, 0.95)
    rank = np.ceil(np.log1p(-u[2]) / np.log1p(-rank_p)).clip(min=1)
    similar = difficulty["answer_similarity"] + gain.get("answer_similarity", 0.0)
    scores = {
        "hit_rate_at_k": (u[0] < hit_q).astype(float),
        "mrr": np.where((u[1] < found_q) & (rank <= K_RANGE), 1.0 / rank, 0.0),
        "answer_similarity": np.clip(similar + 0.05 * _normal_quantile(u[2]), 0, 1),
    }
    return _table(scores)


def _normal_quantile(u: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return np.asarray(norm.ppf(np.clip(u, 1e-9, 1 - 1e-9)))


def _table(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {m: {str(i): float(v) for i, v in enumerate(values)} for m, values in scores.items()}


def _current(tolerances: dict[str, float], stats: GateStats) -> Rule:
    def promotes(challengers: list[Evaluated], live: Evaluated) -> bool:
        verdicts = gate(challengers, live, tolerances=tolerances, thresholds={}, stats=stats)
        return any(v.passed for v in verdicts.values())

    return promotes


def _previous(tolerances: dict[str, float], samples: int = 1000, confidence: float = 0.95) -> Rule:
    """The gate before this benchmark: each challenger alone, percentile bootstrap intervals,
    promoted when no metric's lower bound reaches below -tolerance and any one is above 0."""
    tail = (1 - confidence) / 2 * 100

    def lower_bound(live: dict[str, float], challenger: dict[str, float], seed: int) -> float:
        differences = np.array([challenger[q] - live[q] for q in live])
        draws = np.random.default_rng(seed).integers(
            0, len(differences), (samples, len(differences))
        )
        return float(np.percentile(differences[draws].mean(axis=1), tail))

    def promotes(challengers: list[Evaluated], live: Evaluated) -> bool:
        for challenger in challengers:
            bounds = {
                m: lower_bound(dict(live.per_question[m]), dict(challenger.per_question[m]), 0)
                for m in tolerances
            }
            if all(b > -tolerances[m] for m, b in bounds.items()) and max(bounds.values()) > 0:
                return True
        return False

    return promotes


if __name__ == "__main__":
    main()
