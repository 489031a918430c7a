"""Where a stage may write: one guard that every stage's outputs go through, before any work.

`claim_outputs` resolves a stage's outputs to real paths and refuses, with one line naming
both paths, when an output

- equals an input (the recording, the manifest, the hypotheses file), also through a symlink
  or a hard link;
- is a folder that contains an input, or lies inside an input folder (a source tree);
- would replace a file this tool did not write: a folder's `.voxadapt.json` ledger lists
  every name a voxadapt stage wrote there, so a human-made `visit.srt` beside `visit.wav`,
  or a vendor's `predictions.jsonl`, is never overwritten;
- is a folder that another stage owns (`train` into `evaluate`'s folder, `--resume` into
  a `cache`), or that holds files voxadapt did not write, for stages that own their folder.

Inside the `with` block the claim holds an exclusive lock (a lock file with the owner's pid
and host); a lock left by a dead process on this host is taken over, a live one is refused,
so two runs never interleave in one folder. The lock is released when the block ends,
however it ends (Ctrl-C and SIGTERM included).

What a stage builds before moving it into place is named by `voxadapt.staging`, so taking a
claim removes the staging a killed run left in the folder (its process dead, on this host),
and nothing else. A run that fails before writing any output leaves the folder as it found
it: a folder the claim created is removed again, an existing one gets its ledger back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxadapt.errors import ConfigError, VoxadaptError

# mount_point, set_aside_path, staging_path: re-exported, for stages that stage or word a full disk
from voxadapt.filesystem import describe_os_error, unwritable_reason
from voxadapt.filesystem import mount_point as mount_point
from voxadapt.staging import is_staging, process_alive, sweep_stale_staging
from voxadapt.staging import set_aside_path as set_aside_path
from voxadapt.staging import staging_path as staging_path

log = logging.getLogger(__name__)

LEDGER = ".voxadapt.json"  # names this tool wrote in a folder, and the stage that owns it
LOCK = ".voxadapt.lock"


class OutputConflict(VoxadaptError):
    """An output would land on an input, on a file this tool did not write, or in a folder
    another run is writing."""


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_regular(path: Path) -> str | None:
    """The text of a regular file; None if absent. Never blocks: a FIFO or a device under a
    guard file's name is refused, not opened for reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputConflict(f"{path} cannot be read ({exc.strerror}); remove it") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OutputConflict(f"{path} is not a regular file; remove it")
        return handle.read(1 << 24).decode("utf-8", errors="replace")


def read_ledger(folder: Path) -> dict[str, Any]:
    """The ledger of `folder`: {"owner": stage or None, "files": {name: record}}, a record
    being {"stage", "size", "mtime_ns", "sha256"} of what a stage wrote (older ledgers hold
    the stage's name alone)."""
    try:
        data = json.loads(_read_regular(Path(folder) / LEDGER) or "{}")
    except ValueError:
        return {"owner": None, "files": {}}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return {"owner": None, "files": {}}
    owner = data.get("owner") if isinstance(data.get("owner"), str) else None
    files = {}
    for name, record in data["files"].items():  # a damaged ledger vouches for nothing
        if isinstance(record, str):
            files[name] = {"stage": record}
        elif isinstance(record, dict) and isinstance(record.get("stage"), str):
            files[name] = record
    return {"owner": owner, "files": files}


def _write_ledger(folder: Path, ledger: dict[str, Any]) -> None:
    from voxadapt.manifest import atomic_write

    with atomic_write(folder / LEDGER) as handle:
        json.dump(ledger, handle, ensure_ascii=False, indent=1, sort_keys=True)


@contextlib.contextmanager
def _ledger_lock(folder: Path) -> Iterator[None]:
    """Serialise read-modify-write of a folder's ledger between processes (two runs that
    write different files of one folder hold different claims but share the ledger): an
    advisory lock on the folder itself, so no extra file appears in it."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


_HASHED_BYTES = 64 << 20  # files up to this size are recorded with their SHA-256


def _record(path: Path, stage: str) -> dict[str, Any]:
    """What shows that `stage` wrote `path` as it is now."""
    info = os.lstat(path)
    record: dict[str, Any] = {"stage": stage}
    if stat.S_ISREG(info.st_mode):
        record.update(size=info.st_size, mtime_ns=info.st_mtime_ns)
        if info.st_size <= _HASHED_BYTES:
            record["sha256"] = _sha256(path)
    else:
        record["kind"] = "folder" if stat.S_ISDIR(info.st_mode) else "other"
    return record


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def written_by(folder: Path, name: str, stage: str | None = None) -> bool:
    """The ledger shows voxadapt (`stage`, if given) wrote `folder/name` exactly as it is:
    same size and modification time, or same content. A file changed or made by hand since
    is not vouched for (older ledgers, without sizes, vouch by name)."""
    record = read_ledger(folder)["files"].get(name)
    if record is None or (stage is not None and record["stage"] != stage):
        return False
    return _vouches(record, Path(folder) / name)


def _vouches(record: dict[str, Any], path: Path) -> bool:
    """`record` (a ledger entry) shows that `path` is, as it is now, what was written."""
    if record.get("pending"):
        return False
    if "size" not in record:  # a folder, or a ledger from before sizes were kept
        return path.exists() or path.is_symlink()
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size != record["size"]:
        return False
    if info.st_mtime_ns == record.get("mtime_ns"):
        return True
    return record.get("sha256") is not None and record["sha256"] == _sha256(path)


@dataclass
class OutputClaim:
    """The checked outputs of one stage run; use as a context manager to hold the lock."""

    stage: str
    folder: Path  # real path of the folder the outputs go to
    names: list[str]  # entries of `folder` this run writes (files or subfolders)
    owns_folder: bool  # the stage owns the whole folder (train, cache, export)
    lock_path: Path
    _locked: bool = field(default=False, repr=False)
    _started_ns: int = field(default=0, repr=False)
    # what the folder was when the lock was taken: a failed run that wrote nothing restores it
    _created: list[Path] = field(default_factory=list, repr=False)  # folders the claim made
    _before: dict[str, tuple[int, int, int]] = field(default_factory=dict, repr=False)
    _ledger_before: dict[str, Any] | None = field(default=None, repr=False)  # None: no ledger

    def path(self, name: str) -> Path:
        """`folder / name`, for a name this claim declared."""
        if name not in self.names:
            raise AssertionError(f"{self.stage}: output {name!r} was not claimed")
        return self.folder / name

    def __enter__(self) -> OutputClaim:
        self.lock()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, *_: object
    ) -> None:
        self.release(failed=exc is not None)
        _name_the_output(exc, self.folder)

    def lock(self) -> None:
        """Take the exclusive lock of this output (idempotent)."""
        if self._locked:
            return
        from voxadapt.manifest import check_output_dir

        missing = [self.folder, *self.folder.parents]
        missing = missing[: next(k for k, p in enumerate(missing) if p.exists() or p.is_symlink())]
        check_output_dir(self.folder)
        try:
            _acquire(self.lock_path, self.stage)
        except BaseException:  # refused: the folders just made go again
            for folder in missing:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        self._locked = True
        self._started_ns = time.time_ns()
        self._created = missing
        try:
            sweep_stale_staging(self.folder)
            self._before = _listing(self.folder)
            with _ledger_lock(self.folder):
                ledger = read_ledger(self.folder)
                present = (self.folder / LEDGER).exists()
                self._ledger_before = json.loads(json.dumps(ledger)) if present else None
                if self.owns_folder:
                    ledger["owner"] = self.stage
                # names not yet written are entered as pending: a run killed mid-way
                # (SIGKILL: no cleanup) leaves what its stage may resume or replace, and
                # nothing that vouches for a file (`written_by` is False for them)
                for name in self.names:
                    ledger["files"].setdefault(name, {"stage": self.stage, "pending": True})
                _write_ledger(self.folder, ledger)
        except BaseException:  # __exit__ never runs when __enter__ fails: release here
            self.release()
            raise

    def record_written(self) -> None:
        """Enter in the ledger the claimed entries this run wrote (changed since the claim
        was locked), with their size and hash: the ledger vouches for files, not names."""
        if not self.folder.is_dir():
            return
        with _ledger_lock(self.folder):
            ledger = read_ledger(self.folder)
            for name in self.names:
                path = self.folder / name
                try:
                    info = os.lstat(path)
                except OSError:
                    info = None
                recent = info is not None and info.st_mtime_ns >= self._started_ns - 2_000_000_000
                if info is not None and (recent or stat.S_ISDIR(info.st_mode)):
                    ledger["files"][name] = _record(path, self.stage)
                elif ledger["files"].get(name, {}).get("pending"):  # claimed, never written
                    del ledger["files"][name]
            _write_ledger(self.folder, ledger)

    def release(self, *, failed: bool | None = None) -> None:
        """Record what was written and give the lock back (idempotent). failed: the run
        ended with an error (default: an exception is being handled, as in an `except`
        block); if it wrote none of its outputs, the folder is left as the claim found it."""
        if not self._locked:
            return
        if failed is None:
            failed = sys.exc_info()[1] is not None
            _name_the_output(sys.exc_info()[1], self.folder)
        restore = failed and _listing(self.folder) == self._before
        try:
            if restore:
                self._restore_ledger()
            else:
                self.record_written()
        except (OSError, OutputConflict) as exc:  # the outputs stand; say what failed
            log.warning("%s: the ledger could not be updated (%s)", self.folder, exc)
        with contextlib.suppress(OSError, OutputConflict):
            if _lock_owner(self.lock_path).get("pid") == os.getpid():
                self.lock_path.unlink()
        self._locked = False
        if restore:
            self._remove_created_folders()

    def _restore_ledger(self) -> None:
        """After a failed run that wrote nothing: the ledger as it was before the claim (its
        pending entries and ownership withdrawn; what other runs entered since is kept)."""
        with _ledger_lock(self.folder):
            ledger = read_ledger(self.folder)
            before = self._ledger_before
            for name in self.names:
                if ledger["files"].get(name, {}).get("pending"):
                    earlier = (before or {}).get("files", {}).get(name)
                    if earlier is None:
                        del ledger["files"][name]
                    else:  # a killed run's pending entry stays as it was
                        ledger["files"][name] = earlier
            if self.owns_folder:
                ledger["owner"] = before["owner"] if before is not None else None
            if before is None and not ledger["files"] and ledger["owner"] is None:
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / LEDGER).unlink()
            else:
                _write_ledger(self.folder, ledger)

    def _remove_created_folders(self) -> None:
        """Remove the folders the claim created, if they hold nothing (another run may
        have started writing there meanwhile: then they stay)."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                return
        if self._created:
            log.debug("%s: removed again, the run wrote nothing there", self._created[-1])


# Errors of writing, not reading: inside a claim, they are about its outputs.
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _name_the_output(exc: BaseException | None, folder: Path) -> None:
    """Give a full disk (or quota, or read-only mount) met while writing a claim's outputs
    the folder's name when it has none: a write() or fsync() error carries no file name, and
    `describe_os_error` names the mount point from it."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS and not exc.filename:
        exc.filename = str(folder)


def _lock_owner(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_regular(path) or "{}")
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def _acquire(path: Path, stage: str) -> None:
    """Create lock file `path` exclusively, taking over one left by a dead process."""
    record = json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "since": time.time()}
    )
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            owner = _lock_owner(path)
            pid, host = owner.get("pid"), owner.get("host")
            if host == socket.gethostname() and isinstance(pid, int) and not process_alive(pid):
                log.warning("%s: taking over a stale lock of dead process %d", path.parent, pid)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if not owner and time.time() - _mtime(path) > 5:
                with contextlib.suppress(FileNotFoundError):  # an empty, abandoned lock
                    path.unlink()
                continue
            who = f"{owner.get('stage', 'voxadapt')} (pid {pid} on {host})" if owner else "voxadapt"
            raise OutputConflict(
                f"{path.parent} is being written by another run: {who}; wait for it to end, "
                f"or remove {path} if that run is gone"
            ) from None
        except OSError as exc:
            raise ConfigError(describe_os_error(exc, path.parent)) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record)
        return
    raise OutputConflict(f"cannot take the lock {path}: other runs keep taking it")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _bookkeeping(name: str) -> bool:
    """Entries that are the guard's, not a stage's output."""
    return name in (LEDGER, LOCK) or name.endswith(".voxadapt.lock") or is_staging(name)


def _listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    """What `folder` holds, bookkeeping aside: name -> (inode, size, mtime_ns)."""
    listing = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    for name in names:
        if not _bookkeeping(name):
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(folder, name))
                listing[name] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return listing


def _check_replaceable(folder: Path, names: Iterable[str], stage: str) -> None:
    """Refuse to replace an existing entry of `folder` that no voxadapt stage wrote."""
    ledger = read_ledger(folder) if folder.is_dir() else {"owner": None, "files": {}}
    for name in names:
        target = folder / name
        if not (target.exists() or target.is_symlink()) or _empty_folder(target):
            continue  # nothing there, or nothing to lose
        record = ledger["files"].get(name)
        writer = record["stage"] if record else None
        # a pending entry: the output of a run of `writer` that was killed while writing it
        if writer is None or not (record.get("pending") or _vouches(record, target)):
            raise OutputConflict(
                f"{target} exists and was not written by voxadapt (or was changed since); "
                f"{stage} will not replace it: move it away or choose another output"
            )
        if writer != stage:
            raise OutputConflict(
                f"{target} holds the output of `voxadapt {writer}`; {stage} will not replace "
                "it: choose another output"
            )


def _empty_folder(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def claim_outputs(
    stage: str,
    folder: Path,
    *,
    names: Iterable[str] = (),
    inputs: Iterable[Path | str | None] = (),
    trees: Iterable[Path | str | None] = (),
    owns_folder: bool = False,
    shared_folder: bool = False,
    what: str = "--out",
) -> OutputClaim:
    """Check and claim the outputs of a stage run, before any work.

    folder: where the outputs go (created when the claim is locked); names: the entries
    of it this run writes; inputs: files (or folders) the run reads, which no output may
    equal or contain; trees: input folders whose whole content is read, inside which no
    output may lie; owns_folder: the stage owns everything in `folder` (train, cache,
    export): it must be new, empty, or written by the same stage; shared_folder: only the
    named entries are outputs, the folder itself may hold inputs (subtitles beside their
    recordings).
    Returns the claim; `with claim:` locks it.
    """
    if str(folder) == "-":
        raise ConfigError(f"{what} -: this command writes files, not standard output")
    names = list(names)
    for name in names:
        if not name or Path(name).name != name or name in (".", "..", LEDGER, LOCK):
            raise ConfigError(f"{what}: {name!r} is not a file name")
    real_folder = _real(folder)
    entries = [real_folder / name for name in names]
    # With a shared folder only the named entries are outputs; else the folder is one too.
    outputs = entries if shared_folder else [real_folder, *entries]
    for given in (p for p in inputs if p not in (None, "")):
        real_input = _real(Path(given))
        for output in outputs:
            same = output == real_input or _same_file(output, real_input)
            if same or _inside(real_input, output):
                raise OutputConflict(
                    f"{what} {output} would {'overwrite' if same else 'contain'} the input "
                    f"{given}; choose an output outside the inputs"
                )
    for given in (p for p in trees if p not in (None, "")):
        real_tree = _real(Path(given))
        for output in outputs:
            if output == real_tree or _inside(output, real_tree):
                raise OutputConflict(
                    f"{what} {output} lies inside the input {given}, whose files are all "
                    "read; choose an output outside it"
                )
            if _inside(real_tree, output):
                raise OutputConflict(
                    f"{what} {output} would contain the input {given}; choose an output outside it"
                )
    _check_location(real_folder, what)
    if owns_folder and real_folder.is_dir():
        _check_owned_folder(real_folder, stage, what)
    _check_replaceable(real_folder, names, stage)
    return OutputClaim(stage, real_folder, names, owns_folder, real_folder / LOCK)


def _check_location(folder: Path, what: str) -> None:
    """`folder` can be created (it is made when the claim is locked) and written, without
    creating anything yet: a run refused later leaves no empty folder behind."""
    from voxadapt.manifest import check_output_dir

    if folder.exists():
        check_output_dir(folder, what)
        return
    parent = folder.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {folder}: a parent of it is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = OSError(unwritable_reason(parent), "")
        raise ConfigError(f"{what}: cannot create {folder} ({describe_os_error(reason, parent)})")


def _check_owned_folder(folder: Path, stage: str, what: str) -> None:
    ledger = read_ledger(folder)
    owner = ledger["owner"]
    if owner is not None and owner != stage:
        raise OutputConflict(
            f"{what} {folder} holds the outputs of `voxadapt {owner}`; {stage} writes its own "
            "folder: choose another one"
        )
    if owner is None:
        foreign = sorted(
            entry.name
            for entry in folder.iterdir()
            if not _bookkeeping(entry.name) and entry.name not in ledger["files"]
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise OutputConflict(
                f"{what} {folder} is not empty and was not written by voxadapt ({shown}); "
                f"{stage} needs a new or empty folder"
            )


def claim_output_entry(
    stage: str,
    path: Path,
    *,
    inputs: Iterable[Path | str | None] = (),
    trees: Iterable[Path | str | None] = (),
    what: str = "--out",
) -> OutputClaim:
    """`claim_outputs` for one entry (a file, or a folder built whole and renamed into
    place): its parent folder, its name, and a lock of its own."""
    path = Path(path)
    if str(path) == "-":
        raise ConfigError(f"{what} -: this command writes files, not standard output")
    if path.name in ("", ".", ".."):
        raise ConfigError(f"{what} {path} is not a file or folder name")
    claim = claim_outputs(
        stage,
        path.parent,
        names=[path.name],
        inputs=inputs,
        trees=trees,
        shared_folder=True,  # the entry is the output; its folder may hold inputs
        what=what,
    )
    claim.lock_path = claim.folder / entry_lock_name(path.name)
    return claim


def entry_lock_name(name: str) -> str:
    """The lock file of one entry: `.NAME.voxadapt.lock`, or, where that would pass a file
    name's 255 bytes (a legal 244-byte Korean name), one named by a hash of NAME."""
    lock = f".{name}.voxadapt.lock"
    if len(lock.encode("utf-8", "surrogateescape")) <= 255:
        return lock
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f".{digest}.voxadapt.lock"


def claim_output_file(
    stage: str, path: Path, *, inputs: Iterable[Path | str | None] = (), what: str = "--out"
) -> OutputClaim:
    """`claim_output_entry` for one output file."""
    if Path(path).is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    return claim_output_entry(stage, path, inputs=inputs, what=what)
