"""What the embedding model reads of a chunk: its heading path, its text without markup, and
no more tokens than the model reads.

A chunk cut from the middle of a page ("Order matters: because path operations are evaluated
in order...") means little on its own; prefixing the headings above it ("Path Parameters >
Order matters") tells both the embedding model and BM25 what it is about. Markdown's markup
(link targets, HTML tags, heading anchors, admonition fences) is noise to both and costs tokens,
so it is dropped from the embedded text; the stored chunk keeps the document's own text, so
offsets and citations still point into the file.

The model reads 256 word pieces (all-MiniLM-L6-v2) and silently drops the rest, so a chunk is
measured with the model's own tokenizer and cut further until what is embedded fits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "TokenBudget",
    "clean_markdown",
    "embedded_text",
    "heading_paths",
]

_ANCHOR = re.compile(r"\s*\{\s*#[^}]*\}")
_INCLUDE = re.compile(r"\{\*.*?\*\}", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_FENCE_LINE = re.compile(r"^\s*(///.*|```\w*|~~~\w*)\s*$", re.MULTILINE)
_EMPHASIS = re.compile(r"\*\*|__")
_HEADING_MARK = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_markdown(text: str) -> str:
    """Markdown as a reader sees it: link text without targets, no tags, anchors or fences."""
    for pattern, replacement in (
        (_INCLUDE, ""),
        (_ANCHOR, ""),
        (_IMAGE, r"\1"),
        (_LINK, r"\1"),
        (_TAG, ""),
        (_FENCE_LINE, ""),
        (_EMPHASIS, ""),
        (_HEADING_MARK, ""),
    ):
        text = pattern.sub(replacement, text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def heading_paths(levels: Sequence[int], titles: Sequence[str]) -> list[str]:
    """For each heading, the titles from the top heading down to it, joined by " > "."""
    stack: list[tuple[int, str]] = []
    paths: list[str] = []
    for level, title in zip(levels, titles, strict=True):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, clean_markdown(title)))
        paths.append(" > ".join(name for _, name in stack if name))
    return paths


def embedded_text(body: str, heading_path: str, markdown: bool) -> str:
    """The text the model embeds and BM25 indexes for a chunk."""
    text = clean_markdown(body) if markdown else body
    return f"{heading_path}\n\n{text}" if heading_path else text


class TokenCounter(Protocol):
    def __call__(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens the embedding model reads, and how to count them (its own tokenizer)."""

    limit: int
    count: TokenCounter

    def over(self, texts: Sequence[str]) -> list[bool]:
        return [n > self.limit for n in self.count(texts)]
