"""The local work folder of a gs:// output (transforms/workspace.py local_work_dir): its name is
predictable in the shared temporary space, so it is private like the model cache: this user's,
0700; another user's folder (or a symbolic link) is refused, a looser mode made 0700."""
import os
import tempfile

import pytest

from stembeam.transforms.workspace import local_work_dir

pytestmark = pytest.mark.fast

OUTPUT = "gs://stembeam-out/run"


@pytest.fixture
def tmpdir_base(tmp_path, monkeypatch):
    """Python's temporary folder pointed at a fresh folder (the work folders live there)."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_the_work_folder_of_a_remote_output_is_private(tmpdir_base):
    folder = local_work_dir(OUTPUT, create=True)
    root = os.path.dirname(folder)
    assert os.path.dirname(root) == str(tmpdir_base) and os.path.isdir(folder)
    assert _mode(root) == _mode(folder) == 0o700
    assert os.stat(root).st_uid == os.stat(folder).st_uid == os.getuid()
    assert local_work_dir(OUTPUT) == folder
    # Made 0777 (by hand, by a umask of 0, or planted so): made private again.
    os.chmod(root, 0o777)
    os.chmod(folder, 0o777)
    assert local_work_dir(OUTPUT) == folder
    assert _mode(root) == _mode(folder) == 0o700
    os.chmod(folder, 0o777)
    local_work_dir(OUTPUT, create=True)
    assert _mode(folder) == 0o700


def test_asking_for_the_path_creates_nothing(tmpdir_base):
    folder = local_work_dir(OUTPUT)
    assert not os.path.exists(folder) and not os.listdir(tmpdir_base)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("whose", ["root", "folder"])
def test_a_work_folder_owned_by_another_user_is_refused(tmpdir_base, whose):
    """Another user's folder at the predictable name (here uid 65534) is refused with a clear
    error, not written into, chmodded or swept."""
    folder = local_work_dir(OUTPUT, create=True)
    planted = folder if whose == "folder" else os.path.dirname(folder)
    os.chmod(planted, 0o777)
    os.chown(planted, 65534, 65534)
    for create in (False, True):
        with pytest.raises(PermissionError, match=f"{planted}: the local work folder is owned by uid 65534, not by this user; remove it or set \\$TMPDIR"):
            local_work_dir(OUTPUT, create=create)
    assert os.stat(planted).st_uid == 65534 and _mode(planted) == 0o777


def test_a_symbolic_link_at_the_work_folders_name_is_refused(tmpdir_base, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = os.path.dirname(local_work_dir(OUTPUT))
    os.symlink(elsewhere, root)
    with pytest.raises(PermissionError, match="is a symbolic link"):
        local_work_dir(OUTPUT, create=True)
    assert not os.listdir(elsewhere)


def test_local_outputs_keep_their_work_folder_under_the_output(tmp_path):
    output = str(tmp_path / "out")
    assert local_work_dir(output) == os.path.join(output, "_work", "local") and not os.path.exists(output)
    assert os.path.isdir(local_work_dir(output, create=True))


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root")
def test_the_decoder_refuses_another_users_work_folder(tmpdir_base):
    """Where the job writes decoded samples of a gs:// output's tracks (DecodeAndChunk): a folder
    planted at the predictable name by another user is refused, not used."""
    from stembeam.model.config import get_config
    from stembeam.transforms.audio import DecodeAndChunk
    from stembeam.transforms.stem_files import StemFiles

    decoder = DecodeAndChunk(get_config("spleeter:2stems"), StemFiles(OUTPUT, {}))
    folder = decoder._decode_dir()
    assert _mode(folder) == 0o700
    os.chmod(folder, 0o777)
    os.chown(folder, 65534, 65534)
    with pytest.raises(PermissionError, match="owned by uid 65534"):
        decoder._decode_dir()
