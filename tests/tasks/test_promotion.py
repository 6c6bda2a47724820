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
    sign_flip_p,
)
from tasks.promotion import Evaluated, GateStats, choose, gate, gate_candidate, holm

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
    assert challenger.reasons[0].startswith("no guarded metric improved beyond noise (Holm")


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


def test_the_live_versions_flaky_questions_are_left_out_when_asked() -> None:
    """Question 1 flips across the live version's repeats; it alone makes the candidate look
    worse, and it says nothing about the candidate."""
    live_mrr, candidate_mrr = [1.0] + [0.5] * 7, [0.0] + [0.5] * 7
    champion = contender("live", {"mrr": live_mrr, "hit": [1.0] * 8}, flaky=("1",))
    candidate = contender("c", {"mrr": candidate_mrr, "hit": [1.0] * 8})
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


def test_a_flaky_challenger_keeps_the_questions_it_regresses_on() -> None:
    """Regression: flaky questions of both sides were left out, so a non-deterministic
    challenger removed the very questions it lost and passed on the rest."""
    live = {"mrr": [1.0] * 4 + [0.5] * 16, "hit": [1.0] * 20}
    unstable = {"mrr": [0.5] * 4 + [0.5] * 16, "hit": [1.0] * 20}  # repeats average to 0.5
    flaky = ("1", "2", "3", "4")
    verdict = gate_candidate(
        contender("unstable", unstable, flaky=flaky),
        contender("live", live),
        tolerances=TOLERANCES,
        thresholds={},
    )
    assert verdict.excluded_flaky == []
    assert not verdict.passed
    assert any(r.startswith("mrr may be worse than live") for r in verdict.reasons)


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
    """Four questions, each 0.1 better, one unpaired: the sign-flip test sees 1 pattern in 16
    at least as good (p = 0.0625), and a spread of zero is taken as the rule-of-three bound
    (half the questions off by the differences' full range 2: sd 1), so the interval is
    t(0.975, 3) * 1 / 2 wide on each side."""
    champion = {"1": 0.5, "2": 0.5, "3": 0.5, "4": 0.5}
    candidate = {"1": 0.6, "2": 0.6, "3": 0.6, "4": 0.6, "5": 1.0}  # 5 has no pair
    delta = paired_delta("m", champion, candidate, tolerance=0.02)
    assert delta.questions == 4
    assert delta.mean == pytest.approx(0.1)
    assert delta.p_better == pytest.approx(1 / 16)
    assert delta.p_worse == pytest.approx(1 / 16)
    assert delta.ci_low == pytest.approx(0.1 - 3.182446 * 1.0 / 2, rel=1e-5)
    assert delta.mde == math.inf  # no outcome of four questions reaches p < 0.05


def test_zero_spread_on_a_small_set_is_no_proof_but_on_a_larger_one_it_is() -> None:
    """Regression: equal per-question differences collapsed the bootstrap interval to a point
    and the MDE to 0, so four questions that all improved read as a certain gain."""
    few = paired_delta("hit", dict.fromkeys("1234", 0.0), dict.fromkeys("1234", 1.0))
    assert few.p_better > 0.05 and few.ci_low < 0 and few.mde == math.inf
    keys = [str(i) for i in range(20)]
    many = paired_delta("hit", dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 1.0))
    assert many.p_better < 0.001 and many.ci_low > 0.5 and 0 < many.mde < 1
    same = paired_delta("hit", dict.fromkeys(keys, 1.0), dict.fromkeys(keys, 1.0))
    assert same.p_better == 1.0 and same.ci_low < 0 < same.ci_high


def test_sign_flip_p_is_exact_on_small_sets_and_valid_by_monte_carlo() -> None:
    """Two of three questions better by 1, one worse by 1: of the 8 sign patterns, those with
    a mean >= 1/3 are the 3 with two plus signs and the all-plus one: p = 4/8."""
    assert sign_flip_p(np.array([1.0, 1.0, -1.0])) == pytest.approx(0.5)
    noise = np.random.default_rng(0).normal(size=200)
    p = sign_flip_p(noise, samples=999, seed=1)
    assert 0.001 <= p <= 1.0
    assert sign_flip_p(noise + 1.0, samples=999, seed=1) == pytest.approx(1 / 1000)


def test_minimum_detectable_effect_by_hand() -> None:
    """sd 1.005 over 100 questions, one-sided 95 % with 80 % power, Student t with 99 degrees
    of freedom: (1.660391 + 0.845230) / 10 = 0.250562 per unit of sd."""
    differences = [1.0, -1.0] * 50
    sd = float(np.std(differences, ddof=1))
    assert minimum_detectable_effect(differences) == pytest.approx(0.250562 * sd, rel=1e-4)
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
    mrr = {str(i): 0.5 + 0.1 * i for i in range(6)}
    champion = Evaluated("live", {"mrr": mrr, "sim": {}}, {"mrr": 0.75})
    candidate = Evaluated("c", {"mrr": mrr, "sim": {}}, {"mrr": 0.75})
    verdict = gate_candidate(
        candidate, champion, tolerances={"mrr": 0.03, "sim": 0.03}, thresholds={}
    )
    assert verdict.passed, verdict.reasons
    assert "c: sim not measured by this golden set" in verdict.warnings
    one_sided = Evaluated("d", {"mrr": mrr, "sim": {"1": 0.4}}, {"mrr": 0.75})
    assert not gate_candidate(
        one_sided, champion, tolerances={"mrr": 0.03, "sim": 0.03}, thresholds={}
    ).passed


def ranked(first_hit_ranks: list[int | None], depth: int) -> dict[str, dict[str, object]]:
    """Per question, a ranking ``depth`` long whose only relevant document sits at the rank."""
    return {
        str(i + 1): {"relevant": [r == rank for r in range(1, depth + 1)], "expected": 1}
        for i, rank in enumerate(first_hit_ranks)
    }


def test_a_larger_k_gains_nothing_at_the_common_depth() -> None:
    """Regression: hit_rate_at_k was compared at each version's own k, so a challenger that
    retrieved 10 chunks against the live version's 3 won on hits it found at ranks 4-10."""
    ranks: list[int | None] = [1] * 10 + [6] * 20  # 20 questions found only at rank 6
    own_k = {"hit_rate_at_k": [1.0] * 10 + [0.0] * 20, "mrr": [1.0] * 10 + [0.0] * 20}
    wider = {"hit_rate_at_k": [1.0] * 30, "mrr": [1.0] * 10 + [1 / 6] * 20}
    live = contender("live", own_k)
    live.k, live.ranked = 3, ranked(ranks, 3)
    challenger = contender("k10", wider, improve=True)
    challenger.k, challenger.ranked = 10, ranked(ranks, 10)
    tolerances = {"hit_rate_at_k": 0.02, "mrr": 0.03}
    verdict = gate_candidate(challenger, live, tolerances=tolerances, thresholds={})
    assert not verdict.passed
    assert {d.metric: (d.depth, d.mean) for d in verdict.deltas} == {
        "hit_rate_at_k": (3, 0.0),
        "mrr": (3, 0.0),
    }
    # Without rankings (an evaluation from before they were kept) the own-k values are all
    # there is, and the mechanical gain shows: the common depth is what removes it.
    challenger.ranked, live.ranked = {}, {}
    assert gate_candidate(challenger, live, tolerances=tolerances, thresholds={}).passed


def test_holm_rejects_step_down() -> None:
    """Three p-values at level 0.05: 0.01 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05/1."""
    assert holm({"a": 0.01, "b": 0.02, "c": 0.04}, 0.05) == {"a", "b", "c"}
    assert holm({"a": 0.01, "b": 0.03, "c": 0.04}, 0.05) == {"a"}
    assert holm({"a": 0.03, "b": 0.04}, 0.05) == set()


def test_several_marginal_challengers_are_not_promoted_but_a_clear_one_is() -> None:
    """Each of three challengers alone would pass at 0.05 on one metric; as one family of
    six comparisons none does, while a clear gain survives the correction."""
    n = 40
    base = {"mrr": [0.5] * n, "hit": [1.0] * n}
    # 14 of 40 questions +0.1 and 4 of 40 -0.1 on mrr: p_better near 0.014 alone, under
    # 0.05 / 2 (one challenger's family: mrr and hit) but over 0.05 / 6 (three challengers').
    marginal = {"mrr": [0.6] * 14 + [0.4] * 4 + [0.5] * 22, "hit": [1.0] * n}
    alone = gate_candidate(
        contender("m0", marginal, improve=True),
        contender("live", base),
        tolerances=TOLERANCES,
        thresholds={},
    )
    mrr = next(d for d in alone.deltas if d.metric == "mrr")
    assert 0.05 / 6 < mrr.p_better < 0.05 / 2
    assert alone.passed
    three = [contender(f"m{i}", marginal, improve=True) for i in range(3)]
    verdicts = gate(three, contender("live", base), tolerances=TOLERANCES, thresholds={})
    assert not any(v.passed for v in verdicts.values())
    clear = contender("clear", {"mrr": [0.7] * n, "hit": [1.0] * n}, improve=True)
    verdicts = gate([*three, clear], contender("live", base), tolerances=TOLERANCES, thresholds={})
    assert [name for name, v in verdicts.items() if v.passed] == ["clear"]
