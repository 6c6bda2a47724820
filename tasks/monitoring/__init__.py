"""Monitoring: is the live index still good, and is production traffic still served well?

:mod:`tasks.monitoring.checks` judges fresh evaluations, corpus drift and baselines;
:mod:`tasks.monitoring.production` reads what users asked and said over a window;
:mod:`tasks.monitoring.online` has the judge grade a sample of the answers they were served.
"""

from tasks.monitoring.checks import (
    CheckResult,
    baseline_metrics,
    corpus_drift,
    query_drift,
    run_checks,
    run_checks_task,
    unindexed_of,
    unindexed_tag,
)
from tasks.monitoring.production import (
    ProductionFigures,
    check_production,
    measure_production,
    measure_production_task,
    production_figures,
    question_shift,
)

__all__ = [
    "CheckResult",
    "ProductionFigures",
    "baseline_metrics",
    "check_production",
    "corpus_drift",
    "measure_production",
    "measure_production_task",
    "production_figures",
    "query_drift",
    "question_shift",
    "run_checks",
    "run_checks_task",
    "unindexed_of",
    "unindexed_tag",
]
