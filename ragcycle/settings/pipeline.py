"""Settings of the RAG pipeline and its lifecycle: chunking to answers, evaluation and the gate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

__all__ = [
    "ApiSettings",
    "ChunkingSettings",
    "EvaluationSettings",
    "GenerationSettings",
    "GuardrailSettings",
    "IngestSettings",
    "JudgeSettings",
    "Price",
    "RetrievalSettings",
    "TracingSettings",
]


class ChunkingSettings(BaseModel):
    """How documents are cut into chunks; the hash of this group is stored on every chunk."""

    strategy: Literal["recursive", "fixed", "whole"] = Field(
        "recursive",
        description="recursive: headings > paragraphs > sentences; fixed: windows;"
        " whole: one chunk per document (benchmarks)",
    )
    size: int = Field(800, ge=50, description="maximum chunk length in characters")
    overlap: int = Field(120, ge=0, description="characters shared by neighbouring chunks")
    fit_tokens: bool = Field(
        True,
        description="cut chunks further until the embedding model reads them whole (its own"
        " tokenizer and limit), instead of letting it drop their ends",
    )
    heading_context: bool = Field(
        True,
        description="prefix what is embedded with the chunk's heading path (\"Tutorial > Path"
        ' Parameters > Order matters"), kept in metadata too',
    )

    @model_validator(mode="after")
    def _overlap_smaller_than_size(self) -> ChunkingSettings:
        if self.overlap >= self.size:
            raise ValueError(
                f"chunking.overlap ({self.overlap}) must be smaller than size ({self.size})"
            )
        return self

    def config_hash(self) -> str:
        """Short, stable hash of the chunking parameters, so chunks made differently never mix."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


class IngestSettings(BaseModel):
    """What ingestion reads and how it treats files it cannot use."""

    extensions: list[str] = Field(
        default_factory=lambda: [".pdf", ".md", ".markdown", ".txt", ".html", ".htm"],
        description="file suffixes picked up from directories",
    )
    batch_documents: int = Field(16, ge=1, description="documents per Prefect task run")
    parse_processes: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="processes that load, chunk and scan files beside embedding (0: in the"
        " partition threads; auto: prefect.max_workers from 32 files on)",
    )
    prune: bool = Field(True, description="remove chunks of files deleted from a directory source")
    min_pdf_chars_per_page: int = Field(
        1,
        ge=0,
        description="PDFs averaging fewer extracted characters per page have no usable text layer",
    )
    pdf_passwords: list[SecretStr] = Field(
        default_factory=list, description="tried in order on encrypted PDFs after the empty one"
    )
    # A file is read whole into memory; 64 MiB of text is ~1 GB resident while it is parsed.
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="larger files are skipped, with the limit in the report"
    )
    # 10,000 chunks of 800 characters is a 3,000-page book and ~9 minutes of embedding on 2
    # cores; a document past that is more likely a log or a dump than something to ask about.
    max_chunks_per_document: int = Field(
        10_000, ge=1, description="documents that would cut into more chunks are skipped"
    )


class RetrievalSettings(BaseModel):
    """How many chunks a question gets, and how many more are fetched for document ranking."""

    k: int = Field(5, ge=1, description="chunks (and documents, for metrics) per question")
    fetch_multiplier: int = Field(
        3, ge=1, description="chunks fetched per wanted document when ranking documents"
    )
    mode: Literal["dense", "lexical", "hybrid"] = Field(
        "dense",
        description="dense: embedding similarity; lexical: BM25 over the chunk text; hybrid:"
        " both, fused (retrieval.fusion; ranks best, not yet the default: docs/answering.md)",
    )
    fusion: Literal["convex", "rrf"] = Field(
        "convex",
        description="hybrid: convex (weighted sum of min-max normalized scores) or rrf"
        " (reciprocal rank fusion)",
    )
    candidates: int = Field(
        100, ge=1, description="hybrid: chunks each retriever ranks before fusion"
    )
    rrf_k: int = Field(
        60, ge=1, description="hybrid, rrf: the fusion constant (1 / (rrf_k + rank))"
    )
    dense_weight: float = Field(1.0, ge=0, description="hybrid: weight of the dense ranking")
    lexical_weight: float = Field(1.0, ge=0, description="hybrid: weight of the BM25 ranking")

    @model_validator(mode="after")
    def _some_weight(self) -> RetrievalSettings:
        if self.dense_weight + self.lexical_weight <= 0:
            raise ValueError("retrieval.dense_weight and lexical_weight cannot both be 0")
        return self

    lexical_language: str = Field(
        "english",
        description='BM25 stemmer and stopwords (a Snowball language, or "none"); changing it'
        " rebuilds the lexical index",
    )
    reranker_path: Path | None = Field(
        None, description="a local cross-encoder model folder that reorders the fused top chunks"
    )
    rerank_top_n: int = Field(20, ge=1, description="chunks the cross-encoder rescores")

    @field_validator("lexical_language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        import Stemmer

        known = set(Stemmer.algorithms())
        if value != "none" and value not in known:
            raise ValueError(f"unknown language {value!r}; one of none, {', '.join(sorted(known))}")
        return value


class GenerationSettings(BaseModel):
    """The answer backend: a local GGUF model by default, extractive, or an OpenAI-compatible API.

    ``local`` runs the model in-process with llama.cpp (xllamacpp); ``extractive`` answers with
    retrieved sentences and no model (deterministic: tests, benchmarks); ``openai`` talks to any
    chat-completions endpoint (OpenAI, Ollama, vLLM).
    """

    backend: Literal["local", "extractive", "openai"] = "local"
    prompt_name: str = Field("ragcycle-answer", description="MLflow prompt registry name")
    prompt_version: str | None = Field(
        None, description='version number or alias; default: alias "production", else latest'
    )
    # Calibrated on three golden sets after chunks were cut to the model's 256 tokens: the best
    # chunk of every answerable question scored >= 0.419 (82 questions), of every unanswerable
    # one <= 0.323 (a "how many" question against a short table of numbers); 0.3 let that one
    # through.
    min_score: float = Field(
        0.35,
        description="best retrieval score below which the answer is 'I don't know', whatever"
        " the backend (a model is not asked)",
    )
    local_model: str = Field(
        "smollm2-135m", description="local: catalogue model (`ragcycle models list`)"
    )
    model_path: Path | None = Field(
        None, description="local: any GGUF file instead of a catalogue model"
    )
    context_size: int = Field(4096, ge=256, description="local: context window in tokens")
    # Measured on 2 cores (bench/generate.py): reading the prompt is compute-bound and gains from
    # a second thread (81 -> 144 tokens/s), writing the answer is memory-bound and loses
    # (29 -> 19 tokens/s), so the two phases get their own thread counts.
    threads: int = Field(1, ge=1, description="local: CPU threads writing the answer")
    batch_threads: int = Field(2, ge=1, description="local: CPU threads reading the prompt")
    top_p: float = Field(0.95, gt=0, le=1, description="local and openai: nucleus sampling")
    seed: int = Field(
        0, description="local: sampling seed; repeat r of an evaluation uses seed + r"
    )
    max_sentences: int = Field(3, ge=1, description="extractive: sentences in an answer")
    sentence_scoring: Literal["static", "model"] = Field(
        "static",
        description="extractive: rank sentences by the model's static word-piece embeddings"
        " (fast) or by encoding each sentence with the full model (slower)",
    )
    base_url: str = Field("http://127.0.0.1:11434/v1", description="openai: API base URL")
    model: str = Field("llama3.1", description="openai: model name")
    api_key: SecretStr | None = Field(None, description="openai: key (env, never logged)")
    api_key_secret_block: str | None = Field(
        None, description="openai: name of a Prefect Secret block holding the key"
    )
    timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx and timeouts")
    temperature: float = Field(0.0, ge=0, description="0 is greedy: reproducible answers")
    max_tokens: int = Field(128, ge=1, description="new tokens per answer at most")
    stop: list[str] = Field(
        default_factory=list,
        description="local and openai: strings that end an answer (not included in it)",
    )
    repeat_penalty: float = Field(
        1.0,
        ge=1.0,
        description="local: llama.cpp's penalty on repeating recent tokens (1.0 is none)",
    )
    context_tokens: int = Field(
        0,
        ge=0,
        description="local and openai: tokens of retrieved text the model reads at most, the"
        " sentences closest to the question first (0: every retrieved chunk whole)",
    )
    fallback: Literal["extractive", "abstain"] = Field(
        "extractive",
        description="local and openai: what is served when the model's answer echoes the prompt"
        " or is degenerate: the extractive answer from the same chunks, or an abstention",
    )


class JudgeSettings(BaseModel):
    """The LLM-as-judge of evaluations: its own model, apart from the generator's.

    ``local`` runs a catalogue model (or ``model_path``) in-process, so a small generator can be
    graded by a stronger model; ``openai`` uses the endpoint of ``generation.base_url`` with the
    model named here; ``none`` (the default) turns judge metrics off, so the default metrics are
    judge-free: a judge costs seconds per answer and a one-time calibration, and only the
    catalogue models that pass it (docs/evaluation.md, bench/judge.py) are worth that.
    """

    backend: Literal["none", "local", "openai"] = "none"
    model: str = Field(
        "qwen2.5-coder-0.5b",
        description="local: catalogue model; openai: the endpoint's model name",
    )
    model_path: Path | None = Field(None, description="local: any GGUF file instead")
    max_tokens: int = Field(48, ge=8, description="score: the verdict is a short JSON object")
    context_chars: int = Field(
        1500, ge=200, description="retrieved context shown to the judge, at most"
    )
    formulation: Literal["verdict", "score"] = Field(
        "verdict",
        description="verdict: one yes/no question per criterion, P(yes) read from the first"
        " token's log-probabilities; score: a 1-5 score written as JSON",
    )
    min_accuracy: float = Field(
        0.8,
        ge=0,
        le=1,
        description="a criterion whose pairwise accuracy or agreement on the calibration set is"
        " below this is reported as unreliable and kept out of the gate and the monitor",
    )
    calibration_set: Path | None = Field(
        None,
        description="labelled JSONL the judge is calibrated on (default: the checkout's"
        " samples/judge_calibration.jsonl)",
    )


class GuardrailSettings(BaseModel):
    """What happens to an answer the guardrails flag (``ask``, the API)."""

    pii_action: Literal["redact", "block"] = Field(
        "redact", description="personal data in an answer: replace it, or withhold the answer"
    )
    support_threshold: float = Field(
        0.8, gt=0, le=1, description="share of a sentence's words the context must contain"
    )
    withhold_injected: bool = Field(
        True, description="keep retrieved chunks with prompt-injection markers out of the prompt"
    )
    pii_entities: list[str] = Field(
        ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN"],
        min_length=1,
        description="Presidio entity types that count as personal data (add PERSON, LOCATION,"
        " IP_ADDRESS where names or addresses are private rather than the subject matter)",
    )
    pii_score: float = Field(0.4, ge=0, le=1, description="Presidio's minimum confidence")
    ingest_policy: Literal["flag", "quarantine"] = Field(
        "flag",
        description="chunks with PII or injection markers at ingest: index them with the findings"
        " in their metadata, or keep them out of the index (both listed in the ingest report)",
    )


class TracingSettings(BaseModel):
    """MLflow traces of answered questions (`ragcycle ask`, the API, evaluations)."""

    enabled: bool = Field(True, description="trace every answered question")
    keep_raw: bool = Field(
        False,
        description="a privacy decision: keep the model's raw answers and unredacted retrieved"
        " passages in traces and evaluation tables (default: only what was served, personal data"
        " replaced by its type, a withheld answer by its refusal)",
    )
    keep_raw_questions: bool = Field(
        False,
        description="a privacy decision: keep questions as asked in traces, the query log and"
        " evaluation tables (default: their personal data replaced by its type)",
    )
    experiment: str = Field(
        "serving", description="experiment of production traces: <mlflow.experiment_prefix>-NAME"
    )
    max_pending: int = Field(
        500,
        ge=1,
        le=900,  # MLflow keeps at most 1000 unfinished traces in memory
        description="API: traces waiting while MLflow is slow or down; beyond it, dropped",
    )
    retry_seconds: float = Field(5, gt=0, description="API: wait before retrying MLflow")
    max_delay_seconds: float = Field(
        5, ge=0, description="API: how long a trace may wait for a moment without requests"
    )


class ApiSettings(BaseModel):
    """The HTTP service (`ragcycle api`)."""

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=1, le=65535)
    auth: Literal["key", "none"] = Field(
        "key",
        description="key: every route but /health needs X-API-Key (made on first start when"
        " api_key is unset); none: open, on a loopback host only unless --insecure",
    )
    api_key: SecretStr | None = Field(
        None, description="the key (default: made once, kept in <data_dir>/api_key, mode 0600)"
    )
    max_body_bytes: int = Field(65_536, ge=1024, description="larger requests get 413")
    max_in_flight: int = Field(
        1, ge=1, description="answers generated at once (the model's cores are the limit)"
    )
    max_queue: int = Field(8, ge=0, description="requests waiting for a slot; more get 503")
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After of a 503")
    refresh_seconds: float = Field(
        5, gt=0, description="how often the live index version is looked up again"
    )

    @field_validator("api_key")
    @classmethod
    def _not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "api.api_key is empty: set a key, or leave it unset to have one made on first"
                ' start (api.auth = "none" opens the API)'
            )
        return key


class Price(BaseModel):
    """What one model costs: USD per million tokens (APIs) or per CPU-hour (local models)."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)
    cpu_hour: float | None = Field(
        None, ge=0, description="USD per CPU-hour; default: evaluation.cpu_hour_usd"
    )


class EvaluationSettings(BaseModel):
    """Golden-set evaluation: variance, judges, guardrails and cost."""

    repeats: int = Field(1, ge=1, description="answer every question N times (sampling backends)")
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = Field(0, description="seed of the bootstrap: results are reproducible")
    toxicity_threshold: float = Field(0.5, ge=0, le=1)
    mlflow_genai: bool = Field(
        True, description="also record rows with mlflow.genai.evaluate (evaluation views, traces)"
    )
    judge: JudgeSettings = JudgeSettings()
    prices: dict[str, Price] = Field(
        default_factory=lambda: {"extractive": Price()},
        description="per model name; API models unknown here cost 0 and are flagged",
    )
    # AWS EC2 c7i.large (2 vCPUs) on demand in us-east-1 costs USD 0.08925 an hour: 0.0446 per
    # vCPU-hour, what a local model's measured CPU time is priced at unless prices says otherwise.
    cpu_hour_usd: float = Field(
        0.0446, ge=0, description="USD per CPU-hour of local models (AWS c7i.large on demand)"
    )
