"""Folders that appear whole: written beside their final place, then swapped in.

Indexes, materialised models and training checkpoints are folders that other processes load.
Each is written under `.NAME.tmp-PID` next to `NAME` and renamed into place. A folder's
rename is atomic but cannot replace a non-empty folder, so the previous one is first moved
aside to `.NAME.old-PID`; if the second rename fails, it is put back. Readers see the old
folder, then (for a moment) none, then the new one: never a mix. What a killed writer left
behind is removed by the next writer, once its process is gone.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def staging_dir(dest: Path) -> Path:
    """This process's empty scratch folder beside `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def swap_into_place(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the finished folder `tmp`; on failure the previous `dest` is back."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    moved = dest.exists()
    if moved:
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        if moved:
            os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_folder(dest: Path, write) -> Path:
    """Run `write(tmp)` on a scratch folder and swap it in as `dest`; on any failure the
    scratch folder is removed and `dest` is as it was."""
    dest = Path(dest)
    remove_debris(dest)
    tmp = staging_dir(dest)
    try:
        write(tmp)
        swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_debris(dest: Path) -> None:
    """Remove the scratch and set-aside folders of `dest` that killed writers left.

    They are never loaded, but an index or a model can be gigabytes: without this, every
    killed write would leak its size in disk. Only folders of processes no longer running on
    this machine are removed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    for prefix in (f".{dest.name}.tmp-", f".{dest.name}.old-"):
        for path in dest.parent.iterdir():
            pid = path.name[len(prefix):]
            if path.name.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
