"""Files and folders written whole or not at all: what a crash, a kill or a full disk
cannot leave half-written.

- :func:`atomic_write` (a ``with`` block writing a file object), :func:`atomic_write_bytes`,
  :func:`atomic_write_text`: the data goes to a temporary file beside the target
  (``.tmp-<name>-...``), is flushed and fsynced, then renamed over the target
  (``os.replace``); on any failure the temporary is removed and the target is untouched;
- :func:`replace_dir`: the same for a folder: the ``with`` block fills a temporary folder
  beside the target, whose files are then fsynced and which takes the target's place,
  atomically where the system can swap two folders (Linux ``renameat2``
  ``RENAME_EXCHANGE``); ``previous=`` keeps the replaced folder there instead of deleting
  it. Temporary folders of processes that died are removed on the next call;
- :func:`check_space`: a full disk reported before a writer that cannot fail cleanly.

An ``OSError`` raised while writing names the target (``err.filename``), not a temporary:
on a full disk (``errno.ENOSPC``) the caller can say which file or folder was not written,
and that the previous one is intact.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import NotFoundError

TMP_PREFIX = ".tmp-"  # temporaries: never read as data (see also speechrnn.shards)


def _named(err: OSError, target: Path, temporary: Path) -> OSError:
    """``err`` about ``target``: the same error when it already names another file."""
    if err.errno is None or (err.filename is not None
                             and not str(err.filename).startswith(str(temporary))):
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(target))


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 fsync: bool = True, newline: str | None = None) -> Iterator[IO]:
    """A file object whose contents replace ``path`` when the block ends without error;
    ``mode`` ``"wb"`` or ``"w"`` (text, ``encoding``). ``fsync=False``: not forced to disk
    before the rename (a cache whose damaged entries are recomputed)."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        named = _named(err, path, tmp) if isinstance(err, OSError) else err
        if named is err:
            raise
        raise named from err


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, encoding: str | None = None) -> None:
    with atomic_write(path, "w", encoding) as f:
        f.write(text)


@contextlib.contextmanager
def replace_dir(target: str | Path, previous: str | Path | None = None) -> Iterator[Path]:
    """An empty temporary folder that, filled by the ``with`` block without error, takes
    the place of ``target`` (created or replaced). ``previous``: where the replaced
    ``target`` is kept (in place of what was there; left alone when there is no
    ``target``); else it is deleted. On an error the temporary folder is removed and
    ``target`` (and ``previous``) are as they were."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = target.with_name(f"{TMP_PREFIX}{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if previous is not None:
            if target.exists():
                shutil.rmtree(previous, ignore_errors=True)
                os.rename(target, previous)
            os.rename(tmp, target)
        elif not target.exists():
            os.rename(tmp, target)
        elif _exchange(tmp, target):  # tmp now holds the replaced folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = tmp.with_name(tmp.name + "-old")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        _fsync(target.parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        named = _named(err, target, tmp) if isinstance(err, OSError) else err
        if named is err:
            raise
        raise named from err


def check_space(path: str | Path, needed: int) -> None:
    """Raise ``ENOSPC`` (naming ``path``) now when the file system ``path`` is to be
    written on has fewer than ``needed`` bytes free: for a writer that cannot fail cleanly
    on a full disk (HDF5 can take the whole process down)."""
    path = Path(path)
    where = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device (about {needed / 2**20:.1f} "
                      f"MB needed, {free / 2**20:.1f} MB free)", str(path))


def remove_stale(target: Path) -> None:
    """Remove the temporary folders of ``target`` left by processes that are gone; a
    ``target`` replaced only halfway (the fallback's two renames) is put back."""
    for path in target.parent.glob(f"{TMP_PREFIX}{target.name}-*"):
        pid, _, old = path.name[len(TMP_PREFIX) + len(target.name) + 1:].partition("-")
        if not pid.isdigit() or not path.is_dir() or _alive(int(pid)):
            continue
        if old == "old" and not target.exists():
            os.rename(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot sync a folder
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def source_stamps(paths: Iterable[str | Path]) -> list[list]:
    """Each source file's path, size and modification time: what a model built from them
    (the LM, the lexicon) is kept with, to be built again when one changes."""
    stamps = []
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError as err:
            raise NotFoundError(f"{path}: cannot read source ({err.strerror})") from None
        stamps.append([str(path), st.st_size, st.st_mtime_ns])
    return stamps
