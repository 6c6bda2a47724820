"""What every benchmark script shares: where the corpus comes from, and how it is chosen."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_PDFS = REPO.parent / "shared" / "corpus" / "pdfs"


def corpus_parser(doc: str | None, default_limit: int = 0) -> argparse.ArgumentParser:
    """``--corpus`` (the team's shared PDFs where present, else the sample corpus), ``--limit``
    and ``--json``."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=SHARED_PDFS if SHARED_PDFS.is_dir() else REPO / "samples" / "corpus",
    )
    parser.add_argument(
        "--limit", type=int, default=default_limit, help="use only the first N files (0: all)"
    )
    parser.add_argument("--json", action="store_true")
    return parser
