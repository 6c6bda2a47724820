"""Loading: files on disk become documents of plain text, page by page.

PDFs are read with pypdf page by page; Markdown and text are decoded with encoding detection
(BOM, UTF-8, UTF-16/32 without BOM, then Windows-1252); HTML is parsed with BeautifulSoup and
lxml and loses its markup but keeps its block structure as line breaks and ``#`` headings.
A file that cannot be used raises :class:`DocumentError` with a reason a person can act on;
the flow records it and moves on.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import charset_normalizer
from bs4 import BeautifulSoup
from pydantic import SecretStr
from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError, PyPdfError

from ragcycle.errors import DocumentError

__all__ = [
    "UNREADABLE",
    "Document",
    "LoadFailure",
    "Page",
    "SourceFile",
    "decode_text",
    "discover_sources",
    "file_content_hash",
    "hash_sources",
    "html_to_text",
    "load_document",
    "load_documents",
    "walk_sources",
]


@dataclass(frozen=True)
class SourceFile:
    """A file found for ingestion; ``doc_id`` is its path relative to the ingest root."""

    path: Path
    root: Path
    doc_id: str


@dataclass(frozen=True)
class Page:
    """One page of a PDF, or the whole text of any other format (number 1)."""

    number: int
    text: str


@dataclass(frozen=True)
class Document:
    """A loaded document; ``content_hash`` is of the file's bytes, so any edit changes it."""

    doc_id: str
    source: str
    root: str
    content_hash: str
    format: str
    pages: tuple[Page, ...]
    title: str = ""
    warnings: tuple[str, ...] = field(default=())

    @property
    def char_count(self) -> int:
        return sum(len(page.text) for page in self.pages)


@dataclass(frozen=True)
class LoadFailure:
    """A file that was not indexed, and why; ``status`` is ``failed`` or ``skipped``."""

    source: str
    doc_id: str
    reason: str
    status: str = "failed"


def discover_sources(paths: Sequence[Path], extensions: Iterable[str]) -> list[SourceFile]:
    """Find ingestible files; a directory's files get ids relative to it, a file its own name.

    Unsupported suffixes in directories are ignored; a file named explicitly is returned whatever
    its suffix, so loading can report it instead of dropping it silently.
    """
    return walk_sources(paths, extensions)[0]


def walk_sources(
    paths: Sequence[Path], extensions: Iterable[str]
) -> tuple[list[SourceFile], list[dict[str, str]]]:
    """:func:`discover_sources`, plus a warning for every path passed over and why: symlink
    loops, broken links, unreadable directories, names with control characters.

    Symlinked directories are followed (a corpus assembled from links is common), each real
    directory once, so a link back to an ancestor is a loop to report, not to recurse into.
    """
    suffixes = {suffix.lower() for suffix in extensions}
    found: dict[str, SourceFile] = {}
    warnings: list[dict[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if path.is_dir():
            for file, problem in _walk(path):
                if problem is not None:
                    warnings.append({"path": str(file), "warning": problem})
                elif file.suffix.lower() in suffixes and not _hidden(file, path):
                    doc_id = file.relative_to(path).as_posix()
                    _add(found, warnings, SourceFile(path=file, root=path, doc_id=doc_id))
        elif _CONTROL.search(path.name):
            warnings.append({"path": repr(str(path)), "warning": _CONTROL_WARNING})
        else:
            _add(found, warnings, SourceFile(path=path, root=path.parent, doc_id=path.name))
    return [found[key] for key in sorted(found)], warnings


def _add(found: dict[str, SourceFile], warnings: list[dict[str, str]], source: SourceFile) -> None:
    """Keep ``source`` unless another file already has its document id (two roots holding the
    same relative path): that one stays, this one is reported, never silently overwritten."""
    first = found.get(source.doc_id)
    if first is None:
        found[source.doc_id] = source
    elif first.path.resolve() != source.path.resolve():
        warnings.append(
            {
                "path": str(source.path),
                "warning": f"skipped: its document id {source.doc_id!r} is already that of"
                f" {first.path}; ingest both from one parent folder to tell them apart",
            }
        )


# A newline or other control character in a file name would end up inside a document id, a
# Chroma metadata value and every report line that names it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_WARNING = "skipped: the name contains control characters; rename the file"


def _walk(root: Path) -> Iterator[tuple[Path, str | None]]:
    """Files under ``root`` (sorted), or a path and the reason it was passed over."""
    seen: set[tuple[int, int]] = set()
    errors: list[OSError] = []
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=errors.append):
        here = Path(folder)
        stat = here.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            dirs.clear()
            yield here, f"skipped: symlink loop or duplicate (to {here.resolve()}, already walked)"
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        for name in sorted(files):
            file = here / name
            if _CONTROL.search(name):
                yield Path(repr(str(file))), _CONTROL_WARNING
            elif file.is_symlink() and not file.exists():
                yield file, "skipped: broken symlink"
            else:
                yield file, None
    for error in errors:
        yield Path(str(error.filename)), f"skipped: cannot read directory ({error.strerror})"


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def file_content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_document(
    source: SourceFile,
    *,
    passwords: Sequence[SecretStr] = (),
    min_pdf_chars_per_page: int = 0,
    max_file_bytes: int | None = None,
) -> Document:
    """Read one file into a :class:`Document` or raise :class:`DocumentError` saying why not.

    A file over ``max_file_bytes`` is skipped before it is read, so one huge file cannot take
    the memory of a whole partition.
    """
    try:
        size = source.path.stat().st_size
        if max_file_bytes is not None and size > max_file_bytes:
            raise DocumentError(
                f"{size:,} bytes, over ingest.max_file_bytes ({max_file_bytes:,})",
                status="skipped",
            )
        data = source.path.read_bytes()
    except FileNotFoundError:
        raise DocumentError("file not found") from None
    except IsADirectoryError:
        raise DocumentError("is a directory, not a file") from None
    except OSError as exc:
        raise DocumentError(f"cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise DocumentError("empty file (0 bytes)", status="skipped")
    suffix = source.path.suffix.lower()
    warnings: list[str] = []
    title = ""
    if suffix == ".pdf":
        pages, warnings, title = _read_pdf(data, passwords)
        fmt = "pdf"
    elif suffix in {".html", ".htm"}:
        title, body = html_to_text(decode_text(data))
        pages, fmt = [Page(1, body)], "html"
    elif suffix in {".md", ".markdown", ".txt", ".text", ".rst"}:
        pages, fmt = [Page(1, decode_text(data))], "markdown" if suffix != ".txt" else "text"
    else:
        raise DocumentError(f"unsupported file type {suffix or '(no suffix)'!r}", status="skipped")
    pages = [Page(page.number, _normalise(page.text)) for page in pages]
    text_chars = sum(len(page.text.strip()) for page in pages)
    if text_chars == 0:
        reason = (
            "no text layer (image-only or scanned PDF; OCR is not enabled)"
            if fmt == "pdf"
            else "no text (empty or whitespace only)"
        )
        raise DocumentError(reason, status="skipped")
    if fmt == "pdf" and text_chars < min_pdf_chars_per_page * len(pages):
        raise DocumentError(
            f"no usable text layer: {text_chars} characters on {len(pages)} page(s)"
            f" (ingest.min_pdf_chars_per_page is {min_pdf_chars_per_page})",
            status="skipped",
        )
    return Document(
        doc_id=source.doc_id,
        source=str(source.path),
        root=str(source.root),
        content_hash=file_content_hash(data),
        format=fmt,
        pages=tuple(page for page in pages if page.text.strip()),
        title=title or source.path.stem,
        warnings=tuple(warnings),
    )


def _read_pdf(data: bytes, passwords: Sequence[SecretStr]) -> tuple[list[Page], list[str], str]:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _decrypt(reader, passwords)
        page_list = list(reader.pages)
    except DocumentError:
        raise
    except FileNotDecryptedError:
        raise DocumentError("encrypted PDF: no configured password opens it") from None
    except (PdfReadError, PyPdfError) as exc:
        raise DocumentError(f"corrupt PDF: {exc}") from None
    except Exception as exc:  # pypdf raises plain errors on some malformed structures
        raise DocumentError(f"corrupt PDF ({type(exc).__name__}): {exc}") from None
    pages: list[Page] = []
    warnings: list[str] = []
    for number, page in enumerate(page_list, start=1):
        try:
            pages.append(Page(number, page.extract_text() or ""))
        except Exception as exc:  # one bad page must not cost the rest of the document
            warnings.append(f"page {number}: text extraction failed ({type(exc).__name__})")
    title = ""
    try:
        metadata = reader.metadata
        title = str(metadata.get("/Title") or "").strip() if metadata is not None else ""
    except Exception:
        warnings.append("unreadable document metadata")
    return pages, warnings, title


def _decrypt(reader: PdfReader, passwords: Sequence[SecretStr]) -> None:
    candidates = ["", *(secret.get_secret_value() for secret in passwords)]
    for password in candidates:
        try:
            if reader.decrypt(password):
                return
        except (PdfReadError, NotImplementedError) as exc:
            raise DocumentError(f"encrypted PDF with unsupported encryption: {exc}") from None
    raise DocumentError(
        "encrypted PDF: needs a password (add it to ingest.pdf_passwords)", status="failed"
    )


_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)


def decode_text(data: bytes) -> str:
    """Decode bytes of unknown encoding: BOM, UTF-8, BOM-less UTF-16/32, else Windows-1252.

    charset-normalizer tells wide encodings without a BOM and binary content apart from text. Its
    guess among single-byte code pages is not used: on short Western European texts it picks
    Central European or Cyrillic pages (cp1250 for German and French samples here, cp1251 for
    English mojibake), while those texts are Windows-1252 or Latin-1 in practice.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _strict_decode(data[len(bom) :], encoding)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    guess = charset_normalizer.from_bytes(data).best()
    if guess is None:
        raise DocumentError("undecodable: binary content, not text")
    if guess.encoding.startswith(("utf_16", "utf_32")):
        return str(guess)
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
        return data.decode("latin-1")


def _strict_decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"undecodable as {encoding}: {exc.reason}") from None


# Tags whose content is never text a reader sees, and block tags that start a new line (or a
# paragraph), so chunking can still cut at the page's own structure.
_SKIPPED_TAGS = ("script", "style", "noscript", "template", "svg", "head")
_PARAGRAPH_TAGS = ("p", "div", "section", "article", "main", "header", "footer", "aside", "nav")
_LINE_TAGS = (
    "address blockquote br dd dl dt figcaption figure form hr li ol pre table td th tr ul".split()
)
_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def html_to_text(markup: str) -> tuple[str, str]:
    """Return ``(title, text)`` of an HTML page; headings become Markdown-style ``#`` lines."""
    soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup.find_all(_SKIPPED_TAGS):
        tag.decompose()
    for tag in soup.find_all(_HEADING_TAGS):
        tag.insert_before("\n" + "#" * int(tag.name[1]) + " ")
        tag.insert_after("\n")
    for tag in soup.find_all(_PARAGRAPH_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n")
    for tag in soup.find_all(_LINE_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    return title, soup.get_text()


_SPACES = re.compile(r"[ \t\u00a0]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def _normalise(text: str) -> str:
    """Fold runs of spaces and blank lines; keep paragraph breaks, which chunking relies on."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def load_documents(
    sources: Sequence[SourceFile],
    *,
    passwords: Sequence[SecretStr] = (),
    min_pdf_chars_per_page: int = 0,
    max_file_bytes: int | None = None,
) -> tuple[list[Document], list[LoadFailure]]:
    """Load many files; each failure is recorded, none stops the others."""
    documents: list[Document] = []
    failures: list[LoadFailure] = []
    for source in sources:
        try:
            documents.append(
                load_document(
                    source,
                    passwords=passwords,
                    min_pdf_chars_per_page=min_pdf_chars_per_page,
                    max_file_bytes=max_file_bytes,
                )
            )
        except DocumentError as exc:
            failures.append(LoadFailure(str(source.path), source.doc_id, exc.reason, exc.status))
    return documents, failures


# What hash_sources records for a file it cannot read: a file that turns unreadable changes the
# corpus snapshot and counts as changed, instead of silently dropping out of it.
UNREADABLE = "unreadable"


def hash_sources(sources: Sequence[SourceFile]) -> dict[str, str]:
    """Content hash of every source by document id; :data:`UNREADABLE` for files that fail."""
    hashes: dict[str, str] = {}
    for source in sources:
        try:
            hashes[source.doc_id] = file_content_hash(source.path.read_bytes())
        except OSError:
            hashes[source.doc_id] = UNREADABLE
    return hashes
