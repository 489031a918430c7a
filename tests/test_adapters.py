"""Adapters on disk: a failed write is one line naming its cause, and never costs the adapter
that was there."""

import errno
import shutil

import pytest
import torch
from safetensors import SafetensorError

from voxadapt.adapters import read_adapter_info, save_adapter, write_failure, writing_weights
from voxadapt.errors import ModelError
from voxadapt.model import AdapterOptions, attach_adapter, load_model
from voxadapt.outputs import mount_point

from conftest import df_mount_point

TORCH_ENOSPC = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


@pytest.mark.parametrize(
    ("error", "needed", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 123_456_789,
         "no space left on {mount} writing {path} (needed ~123 MB), "),
        # safetensors (Rust) has no errno: its text says which
        (SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                         'message: "No space left on device" })'), 12_345,
         "no space left on {mount} writing {path} (needed ~12 kB), "),
        (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"),
         None, "file size limit (ulimit -f) reached writing {path}"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 2_000_000,
         "disk quota exceeded on {mount} writing {path} (needed ~2.0 MB)"),
        # torch has neither: a file system with less room than the write needs is full ...
        (RuntimeError(TORCH_ENOSPC), 10**18, "no space left on {mount} writing {path}"),
        # ... one with room is not (and without a file size limit, torch's words remain)
        (RuntimeError(TORCH_ENOSPC), 10, f"cannot write {{path}}: {TORCH_ENOSPC}"),
        (OSError(errno.EIO, "Input/output error"), 10, "cannot write {path}: Input/output error"),
    ],
)  # fmt: skip
def test_a_failed_write_names_its_cause(tmp_path, error, needed, expected):
    path = tmp_path / "run" / "checkpoint-last.tmp"
    message = write_failure(path, error, needed)
    assert message.startswith(expected.format(mount=df_mount_point(tmp_path), path=path))
    assert mount_point(path) == df_mount_point(tmp_path)


def test_writing_weights_turns_any_library_error_into_one_line(tmp_path):
    no_space = pytest.raises(ModelError, match=r"^no space left on .* \(needed ~1\.5 MB\)")
    with no_space, writing_weights(tmp_path, needed_bytes=1_500_000):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_adapter_save_keeps_the_earlier_adapter(tiny_model, tmp_path, file_size_limit):
    options = AdapterOptions(mode="full")  # the projector's 96 kB of weights
    model = attach_adapter(load_model(tiny_model, quantization="none"), options)
    out = tmp_path / "adapter"
    save_adapter(model, out, options, {"step": 1})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(1.0)
    with file_size_limit(60_000), pytest.raises(ModelError) as failed:
        save_adapter(model, out, options, {"step": 2})
    assert "file size limit of 60 kB (ulimit -f) reached" in str(failed.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert read_adapter_info(out)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging left
    save_adapter(model, out, options, {"step": 2})  # room again: replaced whole
    assert read_adapter_info(out)["step"] == 2
    shutil.rmtree(out)
