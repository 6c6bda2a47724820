"""Evaluation: how good retrieval and answers are, measured on golden sets and benchmarks.

One module per concept:

- :mod:`~tasks.evaluation.golden`: golden datasets (loading, validation, digest).
- :mod:`~tasks.evaluation.metrics`: per-question retrieval and answer metrics.
- :mod:`~tasks.evaluation.stats`: means, percentiles and bootstrap confidence intervals.
- :mod:`~tasks.evaluation.scoring`: answered questions -> scored rows -> a summary.
- :mod:`~tasks.evaluation.judges`: LLM-as-judge metrics and their tolerant parsing.
- :mod:`~tasks.evaluation.beir`: BEIR benchmark sets, scored as MTEB does.

Whether a candidate may replace the live index is lifecycle policy: :mod:`tasks.promotion`.
"""
