"""The paired gate and the choice among candidates, on hand-made per-question samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluation.paired import (
    flaky_questions,
    minimum_detectable_effect,
    paired_delta,
    per_question,
)
from tasks.promotion import Evaluated, GateStats, choose, gate_candidate

TOLERANCES = {"mrr": 0.03, "hit": 0.02}


def scores(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """``{metric: {question: value}}`` from one list per metric, questions numbered from 1."""
    return {m: {str(i + 1): v for i, v in enumerate(vs)} for m, vs in values.items()}


def contender(
    name: str,
    values: dict[str, list[float]],
    *,
    cost: float = 0.0,
    p95: float = 10.0,
    improve: bool = False,
    flaky: tuple[str, ...] = (),
) -> Evaluated:
    table = scores(values)
    metrics = {m: float(np.mean(vs)) for m, vs in values.items()}
    metrics |= {"cost_usd_per_question": cost, "latency_total_p95_ms": p95}
    return Evaluated(name, table, metrics, flaky, improve)


N = 40
rng = np.random.default_rng(3)
BASE = {"mrr": list(rng.uniform(0.2, 0.6, N)), "hit": [1.0] * 20 + [0.0] * 20}


def shifted(delta: float) -> dict[str, list[float]]:
    return {"mrr": [min(1.0, v + delta) for v in BASE["mrr"]], "hit": BASE["hit"]}


def test_clear_win_passes_and_a_challenger_needs_it() -> None:
    champion = contender("live", BASE)
    verdict = gate_candidate(
        contender("better", shifted(0.2), improve=True),
        champion,
        tolerances=TOLERANCES,
        thresholds={},
    )
    assert verdict.passed, verdict.reasons
    mrr = next(d for d in verdict.deltas if d.metric == "mrr")
    assert mrr.ci_low > 0.15 and mrr.questions == N


def test_clear_loss_is_rejected_with_its_interval() -> None:
    verdict = gate_candidate(
        contender("worse", shifted(-0.2)),
        contender("live", BASE),
        tolerances=TOLERANCES,
        thresholds={},
    )
    assert not verdict.passed
    assert any(r.startswith("mrr may be worse than live") and "CI [" in r for r in verdict.reasons)


def test_noise_is_not_a_loss_but_not_a_win_either() -> None:
    """Per-question jitter of +-0.01 around the champion: within tolerance, no improvement."""
    jitter = np.random.default_rng(5).uniform(-0.01, 0.01, N)
    noisy = {"mrr": [v + j for v, j in zip(BASE["mrr"], jitter, strict=True)], "hit": BASE["hit"]}
    champion = contender("live", BASE)
    refresh = gate_candidate(
        contender("refresh", noisy), champion, tolerances=TOLERANCES, thresholds={}
    )
    assert refresh.passed, refresh.reasons
    challenger = gate_candidate(
        contender("tweak", noisy, improve=True), champion, tolerances=TOLERANCES, thresholds={}
    )
    assert not challenger.passed
    assert challenger.reasons[0].startswith("no guarded metric improved beyond noise: best was")


def test_too_few_questions_cannot_pass_and_warn_about_power() -> None:
    """Three questions with a large spread: the interval is wide, the MDE above tolerance."""
    champion = contender("live", {"mrr": [0.2, 0.9, 0.5], "hit": [1.0, 0.0, 1.0]})
    candidate = contender("small", {"mrr": [0.6, 0.5, 0.4], "hit": [1.0, 1.0, 0.0]})
    verdict = gate_candidate(candidate, champion, tolerances=TOLERANCES, thresholds={})
    assert not verdict.passed
    assert any("detect only changes of" in w for w in verdict.warnings)


def test_thresholds_hold_for_a_first_version() -> None:
    low = contender("first", {"mrr": [0.1] * 5, "hit": [0.0] * 5})
    verdict = gate_candidate(low, None, tolerances=TOLERANCES, thresholds={"hit": 0.5})
    assert not verdict.passed and verdict.reasons == ["hit 0.0000 is below the threshold 0.5"]


def test_flaky_questions_are_left_out_when_asked() -> None:
    """Question 1 flips across repeats; it alone makes the candidate look worse."""
    champion = contender("live", {"mrr": [1.0, 0.5, 0.5, 0.5], "hit": [1.0] * 4})
    candidate = contender("c", {"mrr": [0.0, 0.5, 0.5, 0.5], "hit": [1.0] * 4}, flaky=("1",))
    kept = gate_candidate(
        candidate, champion, tolerances=TOLERANCES, thresholds={}, stats=GateStats()
    )
    assert kept.passed and kept.excluded_flaky == ["1"]
    counted = gate_candidate(
        candidate,
        champion,
        tolerances=TOLERANCES,
        thresholds={},
        stats=GateStats(exclude_flaky=False),
    )
    assert not counted.passed


def test_flaky_questions_are_the_ones_whose_verdict_flips() -> None:
    rows = [
        {"line": 1, "repeat": 0, "mrr": 1.0},
        {"line": 1, "repeat": 1, "mrr": 0.0},
        {"line": 2, "repeat": 0, "mrr": 0.9},
        {"line": 2, "repeat": 1, "mrr": 0.6},
        {"line": 3, "repeat": 0, "mrr": math.nan},
        {"line": 3, "repeat": 1, "mrr": 0.2},
    ]
    assert flaky_questions(rows, ["mrr"]) == ["1"]
    assert per_question(rows, ["mrr"]) == {"mrr": {"1": 0.5, "2": 0.75, "3": 0.2}}


def test_paired_delta_by_hand() -> None:
    champion = {"1": 0.5, "2": 0.5, "3": 0.5, "4": 0.5}
    candidate = {"1": 0.6, "2": 0.6, "3": 0.6, "4": 0.6, "5": 1.0}  # 5 has no pair
    delta = paired_delta("m", champion, candidate)
    assert delta.questions == 4
    assert delta.mean == pytest.approx(0.1) and delta.ci_low == pytest.approx(0.1)
    assert delta.mde == 0.0  # no spread: any change is visible


def test_minimum_detectable_effect_by_hand() -> None:
    """sd 1 over 100 questions at 95 % / 80 %: (1.95996 + 0.84162) / 10 = 0.28016."""
    differences = [1.0, -1.0] * 50
    sd = float(np.std(differences, ddof=1))
    assert minimum_detectable_effect(differences) == pytest.approx(0.280158 * sd, rel=1e-4)
    assert minimum_detectable_effect([0.3]) == math.inf


def test_choice_prefers_the_cheaper_of_two_equivalent_candidates() -> None:
    fast = contender("cheap", shifted(0.2), cost=0.001, p95=900)
    pricey = contender("pricey", shifted(0.2), cost=0.010, p95=100)
    chosen, notes = choose([pricey, fast], ["mrr", "hit"])
    assert chosen is not None and chosen.name == "cheap"
    assert any("cheapest per question" in note for note in notes)


def test_choice_takes_the_clearly_better_candidate_even_if_dearer() -> None:
    good = contender("good", shifted(0.05), cost=0.001)
    best = contender("best", shifted(0.3), cost=0.010)
    chosen, notes = choose([good, best], ["mrr", "hit"])
    assert chosen is not None and chosen.name == "best"
    assert any(note.startswith("good is worse than best") for note in notes)


def test_choice_breaks_full_ties_by_latency() -> None:
    slow = contender("slow", BASE, cost=0.0, p95=500)
    quick = contender("quick", BASE, cost=0.0, p95=50)
    chosen, _ = choose([slow, quick], ["mrr", "hit"])
    assert chosen is not None and chosen.name == "quick"


def test_a_metric_the_golden_set_cannot_measure_is_skipped_not_failed() -> None:
    """Regression: a golden set without reference answers left answer_similarity unscored on
    both sides, and the gate rejected every candidate for it."""
    champion = Evaluated("live", {"mrr": {"1": 0.5, "2": 1.0}, "sim": {}}, {"mrr": 0.75})
    candidate = Evaluated("c", {"mrr": {"1": 0.5, "2": 1.0}, "sim": {}}, {"mrr": 0.75})
    verdict = gate_candidate(
        candidate, champion, tolerances={"mrr": 0.03, "sim": 0.03}, thresholds={}
    )
    assert verdict.passed, verdict.reasons
    assert "c: sim not measured by this golden set" in verdict.warnings
    one_sided = Evaluated("d", {"mrr": {"1": 0.5, "2": 1.0}, "sim": {"1": 0.4}}, {"mrr": 0.75})
    assert not gate_candidate(
        one_sided, champion, tolerances={"mrr": 0.03, "sim": 0.03}, thresholds={}
    ).passed
