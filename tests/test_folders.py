"""One way to write a folder others load (crosearch_agent.folders, used by the index store, the
bundled models and the training checkpoints): readers see the old folder or the new one,
never a mix, and a failure at any point leaves the old one in place and no debris."""
import os
import subprocess
import sys

import pytest

from crosearch_agent.folders import remove_debris, write_folder


def _write(files: dict):
    def write(tmp):
        for name, text in files.items():
            (tmp / name).write_text(text)
    return write


def test_a_new_folder_replaces_the_old_one_whole(tmp_path):
    dest = tmp_path / "model"
    write_folder(dest, _write({"a": "1", "b": "1"}))
    write_folder(dest, _write({"a": "2"}))
    assert sorted(p.name for p in dest.iterdir()) == ["a"] and (dest / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failing_writer_leaves_the_old_folder_and_no_debris(tmp_path):
    dest = tmp_path / "model"
    write_folder(dest, _write({"a": "old"}))

    def broken(tmp):
        (tmp / "a").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_folder(dest, broken)
    assert (dest / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / "model"
    write_folder(dest, _write({"a": "old"}))
    real = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError(5, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        write_folder(dest, _write({"a": "new"}))
    monkeypatch.setattr(os, "rename", real)
    assert (dest / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_debris_of_dead_writers_is_removed_and_a_live_writers_is_kept(tmp_path):
    dest = tmp_path / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for name in (f".model.tmp-{dead_pid}", f".model.old-{dead_pid}", f".model.tmp-{live.pid}", ".other.tmp-1"):
            (tmp_path / name).mkdir()
        remove_debris(dest)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".model.tmp-" + str(live.pid), ".other.tmp-1"]
    finally:
        live.kill()
