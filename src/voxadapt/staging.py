"""Staging: what a stage builds before moving it into place, under one naming scheme, so
that what a killed run left behind (GBs for a model) can be found and removed later.

`.voxadapt-staging-<pid>-<host>-<label>` is a stage's work in progress, removed by the next
claim of the folder (`voxadapt.outputs`) once <pid> is dead; `.voxadapt-replaced-...-<name>`
is an earlier output set aside while a new one is swapped in, put back (or removed, once the
new one is in place) the same way. <host> is a hash of the host name: a folder on a shared
mount may hold staging of live runs on other machines, whose pids mean nothing here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)

_STAGING = re.compile(r"\.voxadapt-(?P<kind>staging|replaced)-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-")
_LABEL_BYTES = 160  # room for the prefix within a file name's 255 bytes


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _label(name: str) -> str:
    return name.encode()[:_LABEL_BYTES].decode(errors="ignore")


def staging_path(folder: Path, name: str, *, unique: bool = False) -> Path:
    """Where to build `folder/name` before it is renamed into place: a hidden sibling whose
    name carries this process's pid and host, so that the next claim of `folder` removes it
    if this process dies first. unique: a different path on every call (several threads of
    one process building the same name)."""
    label = _label(f"{secrets.token_hex(4)}.{name}" if unique else name)
    return Path(folder) / f".voxadapt-staging-{os.getpid()}-{_host_tag()}-{label}"


def make_staging_dir(folder: Path, name: str) -> Path:
    """Create and return a new staging folder for `folder/name` (`staging_path`, unique):
    the drop-in for `tempfile.mkdtemp(dir=folder)`, with the mode of any folder the user
    makes (mkdtemp's are 0700: a serving account could not read what is moved out of it)."""
    for _ in range(10):
        path = staging_path(folder, name, unique=True)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free staging name for {name} in {folder}")


def set_aside_path(folder: Path, name: str) -> Path:
    """Where an earlier `folder/name` waits while a new one is swapped in: if this process
    dies before the swap is done, the next claim puts it back (or removes it once the new
    one is in place)."""
    return Path(folder) / f".voxadapt-replaced-{os.getpid()}-{_host_tag()}-{_label(name)}"


def is_staging(name: str) -> bool:
    """`name` follows the staging scheme (`staging_path`, `set_aside_path`)."""
    return _STAGING.match(name) is not None


def sweep_stale_staging(folder: Path) -> list[str]:
    """Remove from `folder` what runs of this host that are no longer alive were staging
    (never a live process's, never an entry outside the scheme), and put back an earlier
    output such a run had set aside but not replaced. Returns the names dealt with."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    host, swept = _host_tag(), []
    for name in names:
        match = _STAGING.match(name)
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or process_alive(pid):
            continue
        path = Path(folder) / name
        label = name[match.end() :]
        target = Path(folder) / label
        if match["kind"] == "replaced" and not (target.exists() or target.is_symlink()):
            if len(label.encode()) >= _LABEL_BYTES or not label:  # the name may be cut short
                log.warning("%s: left in place, its original name is not known", path)
                continue
            with contextlib.suppress(OSError):  # a concurrent sweep got there first
                path.rename(target)
                log.warning("%s: put back the earlier output a dead run had set aside", target)
                swept.append(name)
            continue
        _remove(path)
        log.info("%s: removed the staging of dead process %d", path, pid)
        swept.append(name)
    return swept


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree (never following a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def process_alive(pid: int) -> bool:
    """Process `pid` of this host is running (or may be: another user's)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or no possible pid
        return False
    except PermissionError:  # another user's live process
        return True
    return True
