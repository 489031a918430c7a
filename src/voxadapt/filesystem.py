"""The file system as the OS reports it to a writer: which mount a path is on, and an
OSError worded by its real cause. A read-only file system, a denied permission, a full disk
and a quota are different problems with different fixes; one function words them all."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path


def mount_point(path: Path | str) -> str:
    """The mount point of the file system `path` lies on (of its nearest existing parent if
    it does not exist yet): what `df PATH` names under "Mounted on". Bind mounts count: the
    longest mount point in /proc/self/mountinfo that contains the path wins."""
    real = Path(os.path.realpath(os.path.expanduser(path)))
    while not real.exists() and real != real.parent:
        real = real.parent
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
            # field 5 is the mount point, with octal escapes for space, tab, newline and
            # backslash (proc_pid_mountinfo(5))
            points = [
                Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split(" ")[4]))
                for line in handle
                if line.count(" ") >= 4
            ]
    except OSError:
        points = []
    containing = [p for p in points if real.is_relative_to(p)]
    if containing:
        return str(max(containing, key=lambda p: len(p.parts)))
    while not os.path.ismount(real) and real != real.parent:  # no /proc: device changes
        real = real.parent
    return str(real)


def describe_os_error(exc: OSError, path: Path | str | None = None) -> str:
    """One line for an OSError that ended a write, naming the real cause: a read-only file
    system, a denied permission, a full disk (and which: its mount point) or a quota need
    different fixes. `path` defaults to the error's own file name."""
    where = path if path is not None else exc.filename
    if isinstance(where, bytes):
        where = os.fsdecode(where)
    shown = f": {where}" if where not in (None, "") else ""
    code = exc.errno
    if code == errno.EROFS:
        return f"read-only file system{shown}"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied{shown}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        device = "device"
        if shown:
            with contextlib.suppress(OSError, ValueError, TypeError):  # never fail the message
                device = mount_point(where)
        if code == errno.ENOSPC:
            return f"no space left on {device}{shown}"
        return f"disk quota exceeded on {device}{shown}"
    return f"{exc.strerror or exc}{shown}"


def unwritable_reason(folder: Path) -> int:
    """Why `folder` cannot be written, as an errno: a read-only mount, else permissions."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return errno.EROFS
    except OSError:
        pass
    return errno.EACCES
