"""voxadapt.filesystem: OS errors worded by their real cause, and the mount a path is on."""

import errno
import os
from pathlib import Path

import pytest

from voxadapt.filesystem import describe_os_error, mount_point

from conftest import df_mount_point


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EROFS, "read-only file system: {path}"),
        (errno.EACCES, "permission denied: {path}"),
        (errno.EPERM, "permission denied: {path}"),
        (errno.ENOSPC, "no space left on {mount}: {path}"),
        (errno.EDQUOT, "disk quota exceeded on {mount}: {path}"),
        (errno.ENOENT, "No such file or directory: {path}"),
    ],
)
def test_os_errors_name_their_real_cause(tmp_path, code, expected):
    path = tmp_path / "out" / "model.safetensors"  # not there yet: its parents' mount counts
    mount = df_mount_point(tmp_path)
    error = OSError(code, os.strerror(code), str(path))
    assert describe_os_error(error) == expected.format(path=path, mount=mount)
    assert describe_os_error(OSError(code, os.strerror(code))).count(":") == 0


@pytest.mark.parametrize("where", ["tmp", "/dev/shm", "/"])
def test_mount_point_agrees_with_df(tmp_path, where):
    path = tmp_path if where == "tmp" else Path(where)
    if not path.is_dir():
        pytest.skip(f"no {where} here")
    assert mount_point(path) == df_mount_point(path)
    assert mount_point(path / "not" / "yet") == df_mount_point(path)


def test_a_file_name_given_as_bytes_or_an_odd_path_still_gets_its_line(tmp_path):
    path = tmp_path / "모델.safetensors"
    error = OSError(errno.ENOSPC, "No space left on device", os.fsencode(path))
    assert describe_os_error(error) == f"no space left on {df_mount_point(tmp_path)}: {path}"
    odd = OSError(errno.ENOSPC, "No space left on device", "bad\0path")  # realpath refuses it
    assert describe_os_error(odd) == "no space left on device: bad\0path"
