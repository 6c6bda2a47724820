"""Prompts: the template the model reads, versioned in MLflow's prompt registry.

Every answer names the prompt version it was made with, so a new version is a change the
lifecycle can evaluate like any other. The retrieved chunks fill the template as numbered
passages with their source, the layout the default prompt asks the model to cite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragcycle.errors import ConfigError
from tasks.indexing.store import Hit
from tasks.retrying import outage_task

__all__ = [
    "DEFAULT_PROMPT",
    "DONT_KNOW",
    "PromptTemplate",
    "build_context",
    "load_prompt",
    "load_prompt_task",
]

DONT_KNOW = "I don't know: the indexed documents do not answer this question."


DEFAULT_PROMPT = (
    "Answer the question using only the numbered context passages below. Cite the passages you"
    " use as [1], [2], ... If the context does not contain the answer, reply exactly:"
    f' "{DONT_KNOW}"\n\nContext:\n{{{{context}}}}\n\nQuestion: {{{{question}}}}\nAnswer:'
)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with its registry identity; ``{{question}}`` and ``{{context}}`` are filled in."""

    name: str
    version: str
    template: str

    def format(self, *, question: str, context: str) -> str:
        return self.template.replace("{{question}}", question).replace("{{context}}", context)

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


def build_context(hits: Sequence[Hit]) -> str:
    """Numbered passages with their source, the layout the default prompt cites."""
    blocks = []
    for number, hit in enumerate(hits, start=1):
        page = hit.metadata.get("page_start")
        where = f"{hit.metadata.get('source', hit.doc_id)}" + (f", page {page}" if page else "")
        blocks.append(f"[{number}] ({where})\n{hit.text}")
    return "\n\n".join(blocks)


def load_prompt(
    name: str, version: str | None, *, default_template: str = DEFAULT_PROMPT
) -> PromptTemplate:
    """The prompt from MLflow's registry; the built-in default is registered as version 1 if absent.

    ``version`` is a number or an alias; without one the ``production`` alias wins, else the latest
    version. A store without a prompt registry is a configuration error, never a silent fallback.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            uri = (
                f"prompts:/{name}/{version}" if version.isdigit() else f"prompts:/{name}@{version}"
            )
            found = mlflow.genai.load_prompt(uri)
        else:
            found = mlflow.genai.load_prompt(f"prompts:/{name}@production", allow_missing=True)
            if found is None:
                found = mlflow.genai.load_prompt(f"prompts:/{name}@latest", allow_missing=True)
            if found is None:
                found = _register_default(name, default_template)
    except MlflowException as exc:
        raise ConfigError(
            f"cannot use prompt {name!r} (version {version or 'default'}) from the MLflow prompt"
            f" registry at {mlflow.get_tracking_uri()}: {exc.message}. Use a database-backed"
            " tracking store or server (e.g. sqlite:///mlflow.db)"
        ) from None
    return PromptTemplate(name=name, version=str(found.version), template=str(found.template))


def _register_default(name: str, template: str) -> Any:
    """Register the built-in prompt as version 1; if another process registered it first (two
    workers' first runs against one registry), use theirs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        registered = mlflow.genai.register_prompt(
            name,
            template=template,
            commit_message="ragcycle default answer prompt",
            tags={"created_by": "ragcycle"},
        )
        # The version served when none is asked for carries the alias that says so.
        mlflow.genai.set_prompt_alias(name, "production", int(registered.version))
        return registered
    except MlflowException as exc:
        if "already exists" not in str(exc):
            raise
        return mlflow.genai.load_prompt(f"prompts:/{name}@latest")


@outage_task("load-prompt", delays=(1, 5))
def load_prompt_task(name: str, version: str | None) -> PromptTemplate:
    """Prefect edge of :func:`load_prompt` (a tracking server can blip)."""
    return load_prompt(name, version)
