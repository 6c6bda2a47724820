"""Evaluation: golden datasets, and the metrics that say how good retrieval and answers are.

Retrieval is scored at document level (a document ranks at its best chunk) because golden sets
name files, not chunks. Metrics return ``nan`` when there is nothing to score (recall of a
question with no relevant document), never a fake 0, and aggregates ignore those rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import DatasetError

__all__ = [
    "GoldenItem",
    "GoldenSet",
    "bootstrap_ci",
    "hit_rate_at_k",
    "load_golden",
    "matches_source",
    "mrr",
    "ndcg_at_k",
    "percentile",
    "precision_at_k",
    "recall_at_k",
    "supported_share",
    "token_f1",
]


@dataclass(frozen=True)
class GoldenItem:
    """One golden question; no answer and no sources means "not answerable from the corpus"."""

    line: int
    question: str
    expected_answer: str | None
    expected_sources: tuple[str, ...]
    pages: Mapping[str, tuple[int, ...]]

    @property
    def answerable(self) -> bool:
        return self.expected_answer is not None or bool(self.expected_sources)


@dataclass
class GoldenSet:
    """A loaded dataset: usable items, rejected lines, and a digest that changes with the file."""

    path: Path
    items: list[GoldenItem]
    errors: list[dict[str, Any]] = field(default_factory=list)
    digest: str = ""

    @property
    def name(self) -> str:
        return self.path.stem


def load_golden(path: Path) -> GoldenSet:
    """Read a JSONL golden set; bad lines are reported with their number, the rest is kept."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    items: list[GoldenItem] = []
    errors: list[dict[str, Any]] = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(_parse_item(number, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append({"line": number, "error": f"invalid JSON: {exc.msg}"})
        except ValueError as exc:
            errors.append({"line": number, "error": str(exc)})
    if not items:
        raise DatasetError(f"dataset {path} has no usable question ({len(errors)} bad lines)")
    return GoldenSet(path, items, errors, hashlib.sha256(raw).hexdigest()[:16])


def _parse_item(number: int, data: Any) -> GoldenItem:
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON object")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or empty 'question'")
    answer = data.get("expected_answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError("'expected_answer' must be a string or null")
    sources = data.get("expected_sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ValueError("'expected_sources' must be a list of strings")
    pages = data.get("pages") or {}
    if not isinstance(pages, dict) or not all(
        isinstance(v, list) and all(isinstance(p, int) for p in v) for v in pages.values()
    ):
        raise ValueError("'pages' must map a source to a list of page numbers")
    return GoldenItem(
        number,
        question.strip(),
        answer,
        tuple(sources),
        {key: tuple(value) for key, value in pages.items()},
    )


def matches_source(doc_id: str, expected: str) -> bool:
    """A golden source names a document by its id (path under the ingest root) or file name."""
    return doc_id == expected or doc_id.endswith("/" + expected)


def relevant_in(ranked: Sequence[str], expected: Iterable[str]) -> list[bool]:
    wanted = list(expected)
    return [any(matches_source(doc_id, source) for source in wanted) for doc_id in ranked]


def hit_rate_at_k(relevance: Sequence[bool], k: int) -> float:
    return float(any(relevance[:k]))


def recall_at_k(relevance: Sequence[bool], total_relevant: int, k: int) -> float:
    if total_relevant == 0:
        return math.nan
    return sum(relevance[:k]) / total_relevant


def precision_at_k(relevance: Sequence[bool], k: int) -> float:
    return sum(relevance[:k]) / k


def mrr(relevance: Sequence[bool], k: int | None = None) -> float:
    for rank, relevant in enumerate(relevance[:k] if k else relevance, start=1):
        if relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(gains: Sequence[float], ideal_gains: Iterable[float], k: int) -> float:
    """nDCG with trec_eval's linear gains: sum(gain / log2(rank + 1)) over the ideal ordering."""
    ideal = sorted((g for g in ideal_gains if g > 0), reverse=True)[:k]
    if not ideal:
        return math.nan
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains[:k]))
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CITATION = re.compile(r"\s*\[\d+\]")


def normalize_answer(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation, articles or citation markers."""
    text = _CITATION.sub(" ", text).lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between an answer and the reference answer."""
    predicted, expected = normalize_answer(prediction), normalize_answer(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def supported_share(answer: str, contexts: Sequence[str], threshold: float = 0.8) -> float:
    """Share of answer sentences whose words (no stop-words) mostly occur in the context.

    A lexical check: cheap and deterministic, exact for extractive answers, a lower bound for
    paraphrases (the LLM-judge faithfulness covers those when a judge is configured).
    """
    context_words = set(normalize_answer(" ".join(contexts)))
    sentences = [s for s in _SENTENCES.split(_CITATION.sub("", answer)) if normalize_answer(s)]
    if not sentences:
        return math.nan
    supported = 0
    for sentence in sentences:
        words = [w for w in normalize_answer(sentence) if w not in _STOPWORDS] or normalize_answer(
            sentence
        )
        if sum(w in context_words for w in words) / len(words) >= threshold:
            supported += 1
    return supported / len(sentences)


_STOPWORDS = frozenset(
    "i me my we our you your he him his she her it its they them their what which who whom this"
    " that these those am is are was were be been being have has had having do does did doing"
    " and but if or because as until while of at by for with about against between into through"
    " during before after above below to from up down in out on off over under again further then"
    " once here there when where why how all any both each few more most other some such no nor"
    " not only own same so than too very s t can will just don should now".split()
)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def bootstrap_ci(
    values: Sequence[float], *, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling questions; ``nan``s are left out."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(data) == 0:
        return (math.nan, math.nan)
    if len(data) == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def nanmean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else math.nan


@dataclass(frozen=True)
class ScoringConfig:
    """What scoring needs besides the answers: k, prices and guardrail thresholds."""

    k: int
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0
    toxicity_threshold: float = 0.5


def score_row(
    item: GoldenItem,
    repeat: int,
    retrieval: Any,
    answer: Any,
    config: ScoringConfig,
    *,
    answer_vector: np.ndarray | None,
    expected_vector: np.ndarray | None,
) -> dict[str, Any]:
    """Every per-question metric, guardrail flag and cost figure for one answered question."""
    from tasks.guardrails import check_contexts, check_text

    k = config.k
    documents = retrieval.documents()
    ranked = [doc.doc_id for doc in documents]
    relevance = relevant_in(ranked, item.expected_sources)
    answerable = item.answerable
    has_sources = bool(item.expected_sources)
    contexts = [hit.text for hit in retrieval.top_chunks(k)]
    guard = check_text(answer.text, toxicity_threshold=config.toxicity_threshold)
    context_pii = any(check_text(text).pii for text in contexts)
    retrieve_ms = float(retrieval.latency_ms.get("retrieve", 0.0))
    cost = (
        answer.prompt_tokens * config.price_prompt_per_mtok
        + answer.completion_tokens * config.price_completion_per_mtok
    ) / 1e6
    row: dict[str, Any] = {
        "line": item.line,
        "repeat": repeat,
        "question": item.question,
        "answer": answer.text,
        "expected_answer": item.expected_answer,
        "expected_sources": list(item.expected_sources),
        "retrieved_documents": ranked[:k],
        "sources": [f"{s.source}#p{s.page}" if s.page else s.source for s in answer.sources],
        "abstained": bool(answer.abstained),
        "best_score": float(retrieval.best_score),
        f"hit_rate_at_{k}": hit_rate_at_k(relevance, k) if has_sources else math.nan,
        f"recall_at_{k}": recall_at_k(relevance, len(item.expected_sources), k)
        if has_sources
        else math.nan,
        f"precision_at_{k}": precision_at_k(relevance, k) if has_sources else math.nan,
        "mrr": mrr(relevance, k) if has_sources else math.nan,
        f"ndcg_at_{k}": ndcg_at_k(
            [float(r) for r in relevance], [1.0] * len(item.expected_sources), k
        )
        if has_sources
        else math.nan,
        "page_hit_rate": _page_hit(documents[:k], item) if item.pages else math.nan,
        "answer_f1": token_f1(answer.text, item.expected_answer)
        if item.expected_answer is not None
        else math.nan,
        "answer_similarity": _cosine(answer_vector, expected_vector)
        if item.expected_answer is not None and not answer.abstained
        else (0.0 if item.expected_answer is not None else math.nan),
        "faithfulness": supported_share(answer.text, contexts)
        if not answer.abstained
        else math.nan,
        "answer_relevance": _cosine(answer_vector, retrieval.vector)
        if not answer.abstained
        else math.nan,
        "no_answer_correct": float(answer.abstained != answerable),
        "abstained_when_unanswerable": float(answer.abstained) if not answerable else math.nan,
        "answered_when_answerable": float(not answer.abstained) if answerable else math.nan,
        "pii_in_answer": float(bool(guard.pii)),
        "pii_kinds": ",".join(guard.pii_kinds),
        "toxicity": guard.toxicity,
        "toxic_answer": float(guard.toxic),
        "pii_in_context": float(context_pii),
        "injection_in_context": float(bool(check_contexts(contexts))),
        "latency_retrieve_ms": retrieve_ms,
        "latency_generate_ms": float(answer.generate_ms),
        "latency_total_ms": retrieve_ms + float(answer.generate_ms),
        "prompt_tokens": int(answer.prompt_tokens),
        "completion_tokens": int(answer.completion_tokens),
        "cost_usd": cost,
    }
    row["flagged"] = bool(
        row["pii_in_answer"] or row["toxic_answer"] or row["injection_in_context"]
    )
    return row


def _page_hit(documents: Sequence[Any], item: GoldenItem) -> float:
    """1 if a retrieved expected document's best chunk sits on one of the expected pages."""
    for document in documents:
        for source, pages in item.pages.items():
            if matches_source(document.doc_id, source) and document.page in pages:
                return 1.0
    return 0.0


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return math.nan
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator else math.nan


QUALITY_METRICS = (
    "hit_rate_at_{k}",
    "recall_at_{k}",
    "precision_at_{k}",
    "mrr",
    "ndcg_at_{k}",
    "page_hit_rate",
    "answer_f1",
    "answer_similarity",
    "faithfulness",
    "answer_relevance",
    "no_answer_correct",
    "abstained_when_unanswerable",
    "answered_when_answerable",
)
RATE_METRICS = ("pii_in_answer", "toxic_answer", "pii_in_context", "injection_in_context")


@dataclass
class Summary:
    """Aggregated metrics with confidence intervals, ready to log."""

    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    questions: int
    rows: int


def summarize(
    rows: Sequence[Mapping[str, Any]],
    k: int,
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Means over questions (repeats averaged first) with bootstrap intervals; latency
    percentiles, tokens and cost over all rows."""
    by_question: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_question.setdefault(int(row["line"]), []).append(row)
    metrics: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    judged = tuple(name for name in JUDGE_CRITERIA if rows and name in rows[0])
    for template in (*QUALITY_METRICS, *judged, *RATE_METRICS):
        name = template.format(k=k)
        per_question = [nanmean(float(r[name]) for r in group) for group in by_question.values()]
        metrics[name] = nanmean(per_question)
        ci[name] = bootstrap_ci(per_question, samples=samples, confidence=confidence, seed=seed)
    for stage in ("retrieve", "generate", "total"):
        values = [float(r[f"latency_{stage}_ms"]) for r in rows]
        metrics[f"latency_{stage}_p50_ms"] = percentile(values, 50)
        metrics[f"latency_{stage}_p95_ms"] = percentile(values, 95)
    metrics["prompt_tokens_total"] = float(sum(int(r["prompt_tokens"]) for r in rows))
    metrics["completion_tokens_total"] = float(sum(int(r["completion_tokens"]) for r in rows))
    metrics["cost_usd_total"] = float(sum(float(r["cost_usd"]) for r in rows))
    metrics["cost_usd_per_question"] = metrics["cost_usd_total"] / max(1, len(rows))
    metrics["flagged_rate"] = nanmean(float(bool(r["flagged"])) for r in rows)
    return Summary(metrics=metrics, ci=ci, questions=len(by_question), rows=len(rows))


def score_rows(
    items: Sequence[GoldenItem],
    repeats: Sequence[int],
    retrievals: Sequence[Any],
    answers: Sequence[Any],
    embedder: Any,
    config: ScoringConfig,
) -> list[dict[str, Any]]:
    """Score every (item, repeat); answers and references are embedded in one batch."""
    answer_texts = [answer.text for answer in answers]
    references = [item.expected_answer or "" for item in items]
    vectors = embedder.embed([*answer_texts, *references]) if answers else np.zeros((0, 0))
    count = len(answers)
    return [
        score_row(
            item,
            repeat,
            retrieval,
            answer,
            config,
            answer_vector=vectors[i],
            expected_vector=vectors[count + i] if item.expected_answer is not None else None,
        )
        for i, (item, repeat, retrieval, answer) in enumerate(
            zip(items, repeats, retrievals, answers, strict=True)
        )
    ]


@task(name="load-golden-set", cache_policy=NO_CACHE)
def load_golden_task(path: str) -> GoldenSet:
    """Prefect edge of :func:`load_golden`."""
    return load_golden(Path(path))


@task(name="score", cache_policy=NO_CACHE)
def score_rows_task(
    items: list[GoldenItem],
    repeats: list[int],
    retrievals: list[Any],
    answers: list[Any],
    embedder: Any,
    config: ScoringConfig,
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`score_rows`."""
    return score_rows(items, repeats, retrievals, answers, embedder, config)


@task(name="summarize", cache_policy=NO_CACHE)
def summarize_task(
    rows: list[dict[str, Any]], k: int, samples: int, confidence: float, seed: int
) -> Summary:
    """Prefect edge of :func:`summarize`."""
    return summarize(rows, k, samples=samples, confidence=confidence, seed=seed)


@dataclass
class BeirQueries:
    """Judged queries of one split and their graded relevance judgements."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir_queries(folder: Path, split: str = "test") -> BeirQueries:
    """``queries.jsonl`` and ``qrels/<split>.tsv``; only queries with a judgement are kept."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    try:
        qrel_lines = qrels_path.read_text(encoding="utf-8").splitlines()
        query_lines = (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read BEIR set {folder}: {exc}") from None
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrel_lines, start=1):
        parts = line.rstrip("\n").split("\t")
        if number == 1 and not parts[-1].lstrip("-").isdigit():
            continue  # header row
        if len(parts) < 3:
            raise DatasetError(f"{qrels_path}:{number}: expected query-id, corpus-id, score")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries: dict[str, str] = {}
    for line in query_lines:
        if line.strip():
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = str(row["text"])
    missing = set(qrels) - set(queries)
    if missing:
        raise DatasetError(f"{len(missing)} judged queries are missing from queries.jsonl")
    return BeirQueries(queries=queries, qrels=qrels)


def score_beir(
    query_ids: Sequence[str],
    retrievals: Sequence[Any],
    qrels: Mapping[str, Mapping[str, int]],
    k: int,
) -> list[dict[str, Any]]:
    """Per-query retrieval metrics at ``k`` against graded judgements (gain = judgement)."""
    rows = []
    for query_id, retrieval in zip(query_ids, retrievals, strict=True):
        judged = qrels[query_id]
        ranked = [document.doc_id for document in retrieval.documents(k)]
        gains = [float(max(judged.get(doc_id, 0), 0)) for doc_id in ranked]
        relevance = [gain > 0 for gain in gains]
        relevant_total = sum(1 for score in judged.values() if score > 0)
        rows.append(
            {
                "query_id": query_id,
                "question": retrieval.question,
                "retrieved": ranked,
                f"ndcg_at_{k}": ndcg_at_k(gains, [float(s) for s in judged.values()], k),
                f"recall_at_{k}": recall_at_k(relevance, relevant_total, k),
                f"precision_at_{k}": precision_at_k(relevance, k),
                f"mrr_at_{k}": mrr(relevance, k),
                f"hit_rate_at_{k}": hit_rate_at_k(relevance, k),
            }
        )
    return rows


@task(name="load-beir-queries", cache_policy=NO_CACHE)
def load_beir_queries_task(folder: str, split: str) -> BeirQueries:
    """Prefect edge of :func:`load_beir_queries`."""
    return load_beir_queries(Path(folder), split)


@task(name="score-beir", cache_policy=NO_CACHE)
def score_beir_task(
    query_ids: list[str], retrievals: list[Any], qrels: dict[str, dict[str, int]], k: int
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`score_beir`."""
    return score_beir(query_ids, retrievals, qrels, k)


def summarize_beir(rows: Sequence[Mapping[str, Any]], k: int) -> dict[str, float]:
    """Mean of each per-query metric, as MTEB reports them."""
    names = (
        f"ndcg_at_{k}",
        f"recall_at_{k}",
        f"precision_at_{k}",
        f"mrr_at_{k}",
        f"hit_rate_at_{k}",
    )
    return {name: nanmean(float(row[name]) for row in rows) for name in names}


JUDGE_PROMPT = """You grade a question-answering system. Reply with JSON only, like {{"score": 3}}.
Score from 1 (worst) to 5 (best) how {criterion}

Question: {question}
Reference answer: {reference}
Retrieved context:
{context}
System answer: {answer}
"""

JUDGE_CRITERIA = {
    "judge_correctness": "correct the system answer is compared with the reference answer.",
    "judge_faithfulness": "fully the system answer is supported by the retrieved context.",
}

_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_judge_score(text: str) -> float:
    """A 1-5 judge score as 0-1; ``nan`` when the judge's reply holds no usable score.

    Accepts the JSON asked for, JSON wrapped in prose or code fences, or a bare number.
    """
    candidates: list[Any] = []
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            parsed = json.loads(text[start : end + 1])
            if isinstance(parsed, dict):
                candidates.append(parsed.get("score"))
        except json.JSONDecodeError:
            pass
    match = _FIRST_NUMBER.search(text)
    if match:
        candidates.append(match.group())
    for candidate in candidates:
        try:
            score = float(candidate)
        except (TypeError, ValueError):
            continue
        if 1.0 <= score <= 5.0:
            return (score - 1.0) / 4.0
    return math.nan


def judge_rows(
    rows: Sequence[dict[str, Any]], contexts: Sequence[Sequence[str]], judge: Any
) -> None:
    """Add LLM-judge scores to each row in place; a failed or malformed judgement is ``nan``.

    ``judge`` is anything with ``complete(messages) -> (text, usage)``, e.g. the openai backend.
    """
    from ragcycle.errors import GenerationError

    for row, context in zip(rows, contexts, strict=True):
        for name, criterion in JUDGE_CRITERIA.items():
            if name == "judge_correctness" and not row.get("expected_answer"):
                row[name] = math.nan
                continue
            prompt = JUDGE_PROMPT.format(
                criterion=criterion,
                question=row["question"],
                reference=row.get("expected_answer") or "(none)",
                context="\n---\n".join(context)[:6000],
                answer=row["answer"],
            )
            try:
                text, _ = judge.complete([{"role": "user", "content": prompt}])
            except GenerationError:
                row[name] = math.nan
                continue
            row[name] = parse_judge_score(text)


@task(name="judge", cache_policy=NO_CACHE)
def judge_rows_task(
    rows: list[dict[str, Any]], contexts: list[list[str]], judge: Any
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`judge_rows`; returns the rows with judge metrics."""
    judge_rows(rows, contexts, judge)
    return rows


@dataclass
class GateDecision:
    """Whether a candidate index may replace the live one, and why."""

    promote: bool
    reasons: list[str]
    table: list[dict[str, Any]]


def quality_gate(
    candidate: Mapping[str, float],
    live: Mapping[str, float] | None,
    *,
    tolerances: Mapping[str, float],
    thresholds: Mapping[str, float],
    candidate_ci: Mapping[str, Sequence[float]] | None = None,
    use_ci: bool = False,
) -> GateDecision:
    """Champion/challenger: every absolute threshold must hold, and no gate metric may fall
    below the live version's by more than its tolerance (with ``use_ci``, also the candidate's
    upper confidence bound must lie below the live value, so noise alone cannot reject)."""
    reasons: list[str] = []
    table: list[dict[str, Any]] = []
    for metric in sorted(set(tolerances) | set(thresholds)):
        value = float(candidate.get(metric, math.nan))
        live_value = float(live.get(metric, math.nan)) if live is not None else math.nan
        row: dict[str, Any] = {"metric": metric, "candidate": value, "live": live_value}
        verdict = "ok"
        if metric in thresholds and not value >= thresholds[metric]:
            verdict = "below threshold"
            reasons.append(f"{metric} {value:.4f} is below the threshold {thresholds[metric]}")
        if metric in tolerances and not math.isnan(live_value):
            drop = live_value - value
            upper = (candidate_ci or {}).get(metric, (math.nan, math.nan))[1]
            beyond_noise = not use_ci or math.isnan(upper) or upper < live_value
            if (math.isnan(value) or drop > tolerances[metric]) and beyond_noise:
                verdict = "worse than live"
                reasons.append(
                    f"{metric} fell from {live_value:.4f} to {value:.4f}"
                    f" (tolerance {tolerances[metric]})"
                )
        row["verdict"] = verdict
        table.append(row)
    return GateDecision(promote=not reasons, reasons=reasons, table=table)
