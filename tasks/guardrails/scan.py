"""Chunks scanned once, at ingest, for personal data and prompt-injection markers.

The findings go into each chunk's metadata (so a Chroma filter such as ``{"flagged": False}``
can keep them out of a search) and into the ingest report; ``guardrails.ingest_policy`` decides
whether a flagged chunk is indexed with its findings or quarantined (kept out of the index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tasks.chunking import Chunk
from tasks.guardrails.detectors import find_injection_markers
from tasks.guardrails.pii import PiiDetector

__all__ = ["ChunkFinding", "finding_metadata", "scan_chunks"]


@dataclass(frozen=True)
class ChunkFinding:
    """What the scan found in one chunk (entity types and marker names, never the PII)."""

    chunk_id: str
    doc_id: str
    chunk_index: int
    page: int
    pii: tuple[str, ...]
    injection: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "doc_id": self.doc_id,
            "chunk_index": self.chunk_index,
            "page": self.page,
            "pii": list(self.pii),
            "injection": list(self.injection),
        }


def scan_chunks(chunks: Sequence[Chunk], detector: PiiDetector) -> dict[str, ChunkFinding]:
    """Findings of the chunks that have any, by chunk id (PII detection runs batched)."""
    found: dict[str, ChunkFinding] = {}
    pii_by_chunk = detector.find_many([chunk.text for chunk in chunks])
    for chunk, pii in zip(chunks, pii_by_chunk, strict=True):
        markers = find_injection_markers(chunk.text)
        if pii or markers:
            found[chunk.chunk_id] = ChunkFinding(
                chunk.chunk_id,
                chunk.doc_id,
                chunk.index,
                chunk.page_start,
                tuple(sorted({finding.kind for finding in pii})),
                tuple(markers),
            )
    return found


def finding_metadata(finding: ChunkFinding | None) -> dict[str, str | bool]:
    """The metadata fields a scanned chunk carries (Chroma takes scalars: comma-joined)."""
    if finding is None:
        return {"flagged": False, "pii": "", "injection": ""}
    return {
        "flagged": True,
        "pii": ",".join(finding.pii),
        "injection": ",".join(finding.injection),
    }
