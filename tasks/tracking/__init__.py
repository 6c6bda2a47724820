"""Tracking: what each run did, where people and scripts look for it.

- :mod:`~tasks.tracking.runs`: MLflow runs of evaluations and lifecycle decisions, status queries.
- :mod:`~tasks.tracking.reports`: ingest, evaluation and decision reports as Prefect artifacts.
- :mod:`~tasks.tracking.plots`: plots of metrics across index versions.

The query log, which is also the audit trail of answers, has a room of its own:
:mod:`tasks.query_log`.
"""
