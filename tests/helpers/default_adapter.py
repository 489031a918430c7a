"""The adapter files of a short default `train` run on the tiny model, as a fingerprint.

`tests/assets/default_adapter_golden.json` holds the fingerprint recorded before the
`--train-modules` option existed (issue #21); `tests/test_train_modules.py` checks that a
default run still writes the same files. Re-record only for a deliberate change:

    HF_HUB_OFFLINE=1 python tests/helpers/default_adapter.py \
        tests/assets/default_adapter_golden.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from safetensors import safe_open

from voxadapt.decoding import DecodeOptions
from voxadapt.stages.train import TrainConfig, train

BASE = "<BASE_MODEL>"  # the tiny model's path differs per run: normalized in the JSON files


def default_run(tiny_model: Path, manifest: Path, out: Path, **changes: Any) -> Path:
    """Train 3 steps with every option at its default except the toy schedule; the adapter."""
    options: dict[str, Any] = dict(
        model=str(tiny_model),
        train=manifest,
        output_dir=out,
        max_steps=3,
        batch_size=2,
        grad_accum=1,
        lr=1e-2,
        logging_steps=1,
        warmup_ratio=0.0,
        num_workers=0,
        scheduler="constant",
        report_to=["none"],
        decode=DecodeOptions(num_workers=0),
    )
    options.update(changes)
    return train(TrainConfig(**options)).adapter_dir


def fingerprint(adapter_dir: Path, tiny_model: Path) -> dict[str, Any]:
    """The adapter's files: voxadapt_adapter.json's exact text and adapter_config.json's
    content (base path normalized), the safetensors header, the weights' file hash and
    per-tensor sums (to tell changed bytes from another CPU's round-off).

    PEFT writes `target_modules` from a set, so its order follows Python's string hashing
    and differs between processes: that list is compared sorted.
    """
    import torch

    base = json.dumps(str(tiny_model))[1:-1]
    result: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "files": sorted(p.name for p in adapter_dir.iterdir()),
    }
    text = (adapter_dir / "adapter_config.json").read_text(encoding="utf-8")
    peft_config = json.loads(text.replace(base, BASE))
    peft_config["target_modules"] = sorted(peft_config["target_modules"])
    result["adapter_config.json"] = peft_config
    text = (adapter_dir / "voxadapt_adapter.json").read_text(encoding="utf-8")
    from voxadapt.adapters import model_fingerprint

    # since issue 29 the base's content fingerprint is recorded (a moved copy is recognised)
    text = text.replace(str(model_fingerprint(tiny_model)), "<BASE_FINGERPRINT>")
    result["voxadapt_adapter.json"] = text.replace(base, BASE)
    weights = adapter_dir / "adapter_model.safetensors"
    data = weights.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    result["safetensors_header"] = data[8 : 8 + header_size].decode("utf-8")
    result["adapter_model_sha256"] = hashlib.sha256(data).hexdigest()
    sums = {}
    with safe_open(str(weights), "pt") as handle:
        for key in sorted(handle.keys()):
            tensor = handle.get_tensor(key).double()
            sums[key] = [float(tensor.sum()), float(tensor.abs().sum())]
    result["tensor_sums"] = sums
    return result


if __name__ == "__main__":
    from voxadapt.stages.prepare import PrepareConfig, prepare
    from voxadapt.tiny import build_tiny_voxtral

    samples = Path(__file__).parents[2] / "src" / "voxadapt" / "samples"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_voxtral(root / "tiny-voxtral")
        manifest = prepare(PrepareConfig(samples / "train.scp", "scp", root / "data", jobs=1))
        adapter = default_run(model, manifest.manifests["train"], root / "run")
        recorded = fingerprint(adapter, model)
    Path(sys.argv[1]).write_text(json.dumps(recorded, indent=1) + "\n", encoding="utf-8")
