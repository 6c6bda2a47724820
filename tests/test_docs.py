"""The README fits on a screen or two and every page of docs/ is one link away; no relative link
in them points at a file or a heading that is not there."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

DOCS = REPO / "docs"
# [text](target) and ![alt](target), the target up to a space or the closing parenthesis.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return [target for target in _LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in pages():
        for target in links(page):
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_fits_and_reaches_every_docs_page() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 250
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    assert {page.resolve() for page in DOCS.glob("*.md")} - linked == set()


def test_troubleshooting_lists_every_kind_of_failure() -> None:
    """The kinds a ``--json`` failure can carry are the ones the docs name, no more, no fewer."""
    from ragcycle import failures

    text = (REPO / "docs" / "troubleshooting.md").read_text()
    sentence = text[text.index("`kind` is one of") : text.index("Tracebacks")]
    documented = set(re.findall(r"`([a-z]+)`", sentence)) - {"kind"}
    kinds = {kind for _, kind, _ in failures._OWN} | {kind for _, kind, _, _ in failures._KNOWN}
    assert documented == kinds | {"error", "internal"}
