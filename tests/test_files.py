"""Files and folders written whole or not at all."""

import errno
import os
import subprocess
import sys

import pytest

from speechrnn import files
from speechrnn.files import atomic_write, atomic_write_bytes, atomic_write_text, replace_dir


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    with atomic_write(path, "w") as f:
        f.write("third")
    assert path.read_text() == "third"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as write_text makes
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(OSError) as err, atomic_write(path) as f:
        f.write(b"half of the new")
        full_disk()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)  # the target
    with pytest.raises(KeyError), atomic_write(path) as f:
        f.write(b"half")
        raise KeyError("not an OSError: raised as it is")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]


def test_replace_dir_swaps_a_folder_whole(tmp_path):
    target = tmp_path / "model"
    with replace_dir(target) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".tmp-model-")
        (folder / "a").write_text("1")
    with replace_dir(target) as folder:
        (folder / "b").write_text("2")
    assert os.listdir(target) == ["b"] and os.listdir(tmp_path) == ["model"]
    with replace_dir(target, previous=tmp_path / "prev") as folder:
        (folder / "c").write_text("3")
    assert os.listdir(target) == ["c"] and os.listdir(tmp_path / "prev") == ["b"]


def test_replace_dir_without_renameat2_still_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    for name in ("a", "b"):
        with replace_dir(target) as folder:
            (folder / name).write_text(name)
    assert os.listdir(target) == ["b"] and os.listdir(tmp_path) == ["model"]


def test_a_failed_folder_leaves_the_old_one_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model"
    with replace_dir(target) as folder:
        (folder / "weights").write_text("good")
    with pytest.raises(OSError) as err, replace_dir(target) as folder:
        (folder / "weights").write_text("half")
        full_disk()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    monkeypatch.setattr(files, "_fsync_tree", full_disk)  # full at the very end
    with pytest.raises(OSError), replace_dir(target, previous=tmp_path / "prev") as folder:
        (folder / "weights").write_text("new")
    assert (target / "weights").read_text() == "good"
    assert os.listdir(tmp_path) == ["model"]


def test_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    target = tmp_path / "model"
    (tmp_path / f".tmp-model-{dead}").mkdir()  # a kill while writing
    (tmp_path / f".tmp-model-{os.getppid()}").mkdir()  # a live process's: left alone
    (tmp_path / f".tmp-model-{dead}-old").mkdir()  # a kill between the fallback's renames
    (tmp_path / f".tmp-model-{dead}-old" / "weights").write_text("previous")
    files.remove_stale(target)
    assert sorted(os.listdir(tmp_path)) == sorted(["model", f".tmp-model-{os.getppid()}"])
    assert (target / "weights").read_text() == "previous"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
