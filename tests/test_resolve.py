"""Model resolution: explicit folder, $STEMBEAM_MODEL_PATH, cache, verified download."""
import os
import shutil
import tarfile

import pytest

from stembeam.model import resolve
from tests.conftest import MODELS, needs_shared


@pytest.mark.fast
def test_error_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMBEAM_MODEL_PATH", str(tmp_path / "models"))
    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(resolve.ModelNotFoundError) as info:
        resolve.resolve_model_dir("spleeter:4stems", model_dir=str(tmp_path / "given"), download=False)
    message = str(info.value)
    for place in (tmp_path / "given", tmp_path / "models" / "4stems", tmp_path / "cache" / "4stems", "releases/download/v1.4.0/4stems.tar.gz"):
        assert str(place) in message


@pytest.mark.fast
def test_an_incomplete_folder_on_the_way_is_named_as_such(tmp_path, monkeypatch):
    """A folder of the model's name under $STEMBEAM_MODEL_PATH (or the cache) that lacks its
    weights is not "not found": the error says what it has and what is missing."""
    models = tmp_path / "models"
    (models / "4stems").mkdir(parents=True)
    (models / "4stems" / "model.index").write_bytes(b"x")
    (models / "4stems" / "model.meta").write_bytes(b"x")
    monkeypatch.setenv("STEMBEAM_MODEL_PATH", str(models))
    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(resolve.ModelNotFoundError) as info:
        resolve.resolve_model_dir("spleeter:4stems", download=False)
    assert f"{models / '4stems'} ($STEMBEAM_MODEL_PATH: incomplete: it has model.index but no weights (model.data-00000-of-00001)" in str(info.value)
    assert f"{tmp_path / 'cache' / '4stems'} (cache)" in str(info.value)  # absent: nothing more said


@pytest.mark.fast
@needs_shared
def test_order_explicit_then_env_then_cache(tmp_path, monkeypatch):
    official = os.path.join(MODELS, "2stems")
    cache = tmp_path / "cache"
    shutil.copytree(official, cache / "2stems")
    monkeypatch.setenv("STEMBEAM_CACHE", str(cache))
    monkeypatch.setenv("STEMBEAM_MODEL_PATH", MODELS)
    assert resolve.resolve_model_dir("spleeter:2stems", model_dir=official) == official
    assert resolve.resolve_model_dir("spleeter:2stems") == os.path.join(MODELS, "2stems")
    monkeypatch.delenv("STEMBEAM_MODEL_PATH")
    assert resolve.resolve_model_dir("spleeter:2stems", download=False) == str(cache / "2stems")


def _release_archive(tmp_path, corrupt=False):
    """A release-shaped 2stems.tar.gz made from the official files (no network)."""
    folder = tmp_path / "release"
    shutil.copytree(os.path.join(MODELS, "2stems"), folder)
    if corrupt:
        os.chmod(folder / resolve.DATA_FILE, 0o644)
        with open(folder / resolve.DATA_FILE, "r+b") as handle:
            handle.write(b"\0\0\0\0")
    archive = tmp_path / "2stems.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in os.listdir(folder):
            tar.add(folder / name, arcname=name)
    return archive


@needs_shared
def test_download_is_verified_by_sha256(tmp_path, monkeypatch):
    monkeypatch.delenv("STEMBEAM_MODEL_PATH", raising=False)
    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache"))
    good = _release_archive(tmp_path / "good")
    monkeypatch.setattr(resolve, "RELEASE_URL", f"file://{good.parent}/{{name}}.tar.gz")
    path = resolve.resolve_model_dir("spleeter:2stems", download=True)
    assert path == str(tmp_path / "cache" / "2stems")
    assert resolve.sha256_of(os.path.join(path, resolve.DATA_FILE)) == resolve.OFFICIAL_DATA_SHA256["2stems"]

    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache2"))
    bad = _release_archive(tmp_path / "bad", corrupt=True)
    monkeypatch.setattr(resolve, "RELEASE_URL", f"file://{bad.parent}/{{name}}.tar.gz")
    with pytest.raises(resolve.ModelNotFoundError, match="sha256 mismatch"):
        resolve.resolve_model_dir("spleeter:2stems", download=True)
    assert not (tmp_path / "cache2" / "2stems").exists()
