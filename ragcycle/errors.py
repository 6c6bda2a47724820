"""The errors ragcycle raises.

One root, a few shallow branches; library errors (pypdf, chromadb, mlflow, HTTP) are mapped to
these at the boundary so callers never need to import a backend to catch a failure::

    RagcycleError
    ├── ConfigError          bad settings: the message says what to change
    ├── DocumentError        one document cannot be read; recorded and skipped, never fatal to a run
    ├── IndexStoreError      the vector store refused or failed an operation
    ├── FilterError          a metadata filter the vector store refuses (the caller's to fix)
    ├── GenerationError      the LLM backend failed after its retries
    ├── ModelError           a local model file is absent, corrupt or not a model
    ├── RegistryError        the index version registry (MLflow) cannot be read or written
    ├── VersionError         no such index version, or not one the operation can act on
    ├── BusyError            another writer holds the data dir
    ├── ConflictError        the live version changed under a reindex that gated against it
    ├── StoppedError         a run was stopped by a signal or ran past its timeout
    ├── OverloadedError      the API's generation slots and queue are full (a 503; retry later)
    └── DatasetError         a golden dataset or benchmark set cannot be used at all
"""

from __future__ import annotations

__all__ = [
    "BusyError",
    "ConfigError",
    "ConflictError",
    "DatasetError",
    "DocumentError",
    "FilterError",
    "GenerationError",
    "IndexStoreError",
    "ModelError",
    "OverloadedError",
    "RagcycleError",
    "RegistryError",
    "StoppedError",
    "VersionError",
]


class RagcycleError(Exception):
    """Root of every error ragcycle raises on purpose."""


class ConfigError(RagcycleError):
    """The configuration cannot work; the message names the setting to change."""


class DocumentError(RagcycleError):
    """A single document cannot be ingested (corrupt, encrypted, empty, undecodable)."""

    def __init__(self, reason: str, *, status: str = "failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class IndexStoreError(RagcycleError):
    """The vector store failed an operation."""


class FilterError(RagcycleError):
    """A metadata filter (``where``) the vector store refuses; the message says why."""


class GenerationError(RagcycleError):
    """The generation backend failed after its retries."""


class ModelError(RagcycleError):
    """A local model cannot be used: absent (pull it), corrupt, or not a GGUF file."""


class OverloadedError(RagcycleError):
    """Every generation slot is busy and the queue is full: the request may be retried later."""


class DatasetError(RagcycleError):
    """A dataset cannot be used at all (missing file, wrong format)."""


class RegistryError(RagcycleError):
    """The index version registry cannot be read or written (MLflow unreachable, refused)."""


class VersionError(RagcycleError):
    """An index version that does not exist, or whose status the operation cannot act on
    (promoting a failed version, rolling back with no previous one): nothing was changed."""


class BusyError(RagcycleError):
    """Another writer (ingest, reindex, demo) holds the data dir; the message names it."""


class ConflictError(RagcycleError):
    """The live version is no longer the one a decision was made against (a rollback or a
    promotion by hand during a reindex); nothing was changed."""


class StoppedError(RagcycleError):
    """A run was stopped (SIGTERM, Ctrl-C) or a stage ran past its timeout; what it had built
    is marked failed and the live version is untouched."""
