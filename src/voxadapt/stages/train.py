"""The training recipe: (Q)LoRA on the chosen parts of Voxtral (the projector by default, plus
the 4-bit LLM and the audio encoder with `--train-modules`) with CER-selected checkpoints.

Our own small loop rather than HF Trainer: only small adapters train, so gradients are
all-reduced by hand across ranks (no DDP wrapper around a 4-bit model), and checkpoints hold
only trainable weights. Evaluation decodes the valid set with the same engine
(`decoding.Transcriber`) and scores it with the same functions (`scoring.rates.score_row`,
`corpus_metrics`) as `voxadapt evaluate`, so the CER that selects the best adapter is the CER
`evaluate` reports for it. `Trainer` reads as a recipe: `setup()`, `fit()`, `save_checkpoint()`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxadapt.adapters import (
    load_weights,
    model_fingerprint,
    save_adapter,
    swap_in,
    writing_weights,
)
from voxadapt.audio import AudioError
from voxadapt.config import load_yaml, save_config, to_jsonable
from voxadapt.data import IGNORE_INDEX, Collator, TranscriptionDataset
from voxadapt.decoding import (
    MANIFEST_LANGUAGE,
    AudioItem,
    FeatureSource,
    Transcriber,
    ignore_stop_signals,
)
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.families import VOXTRAL, load_frontend
from voxadapt.features import FeatureStore
from voxadapt.identity import changes, file_digest, model_identity, read_identity, write_identity
from voxadapt.longform import AudioProgress
from voxadapt.manifest import (
    Utterance,
    atomic_write,
    honour_umask,
    read_manifest,
)
from voxadapt.model import (
    attach_adapter,
    autocast,
    check_trainable_parts,
    compute_dtype,
    describe_parts,
    format_audit,
    input_dtype,
    load_model,
    parameter_audit,
    resolve_dtype,
)
from voxadapt.outputs import OutputClaim, claim_outputs
from voxadapt.progress import progress
from voxadapt.scoring.rates import corpus_metrics, score_row
from voxadapt.trackers import Trackers, missing_libraries
from voxadapt.training import (
    EpochSampler,
    NonFiniteError,
    StopFlag,
    TrainConfig,
    TrainingInterrupted,
    TrainState,
    all_reduce_mean,
    all_reduce_sum,
    label_positions_loss,
    resume_differences,
    setup_distributed,
    trainable_state,
)
from voxadapt.units import percent

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where `train` put the run and its adapter, and how it ended."""

    output_dir: Path
    adapter_dir: Path
    state: TrainState
    trainable_parameters: int


class Trainer:
    """The recipe: `setup()` builds data, model, optimizer and logs (restoring a checkpoint
    on --resume); `fit()` runs the loop; `save_checkpoint()` writes a resumable state."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.dist = setup_distributed()
        self.output_dir = Path(config.output_dir)
        self.last_dir = self.output_dir / "checkpoint-last"
        self.adapter_dir = self.output_dir / "adapter"
        self.state = TrainState()
        self.trackers: Trackers | None = None
        self.claim: OutputClaim | None = None
        self.identity: dict[str, Any] = {}

    # ------------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Validate inputs, then build everything; nothing heavy happens before the checks."""
        config = self.config
        if self.dist.main:  # rank 0 owns the output folder for the whole run
            self.claim = claim_outputs(
                "train",
                self.output_dir,
                inputs=[config.train, config.valid],
                trees=[config.cache],
                owns_folder=True,
                what="--output-dir",
            )
            self.claim.lock()
            missing = missing_libraries(config.report_to)
            if missing:
                raise ConfigError("; ".join(missing), missing)
            self._check_fresh_start()
        self.identity = {
            "train_manifest": file_digest(config.train),
            "valid_manifest": file_digest(config.valid) if config.valid else None,
            "model": model_identity(config.model),
            "train_modules": list(config.train_modules),  # the parts that learn
        }
        if config.resume:
            self._check_resume()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        if self.config.resume:
            self._restore()
        self._setup_logging()

    def _check_fresh_start(self) -> None:
        """A run without --resume never discards an earlier run's work in --output-dir."""
        state = self.output_dir / "trainer_state.json"
        if self.config.resume or not (state.is_file() or self.last_dir.exists()):
            return
        try:
            step = json.loads(state.read_text(encoding="utf-8")).get("step")
        except (OSError, ValueError, AttributeError):
            step = None
        done = f" (trained {step} steps)" if isinstance(step, int) else ""
        raise ConfigError(
            f"--output-dir {self.output_dir} holds a training run{done}: --resume continues "
            "it; to start over, choose another --output-dir or remove that one"
        )

    def _check_resume(self) -> None:
        old = self.last_dir.with_name(self.last_dir.name + ".old")
        if not (self.last_dir / "state.json").is_file() and (old / "state.json").is_file():
            old.rename(self.last_dir)  # killed between the two renames of save_checkpoint
        if not (self.last_dir / "state.json").is_file():
            raise VoxadaptError(f"--resume: no checkpoint in {self.last_dir}")
        saved_path = self.last_dir / "config.yaml"
        if not saved_path.is_file():
            saved_path = self.output_dir / "config.yaml"
        if not saved_path.is_file():
            return
        changed = resume_differences(load_yaml(saved_path), to_jsonable(self.config))
        saved_identity = read_identity(self.output_dir)
        if saved_identity is not None:  # the manifests' content and the model's revision
            saved_identity.setdefault("train_modules", ["projector"])  # before the option
            named = {change.split(":", 1)[0] for change in changed}  # once, from the config
            changed += [
                change
                for change in changes(saved_identity, self.identity)
                if change.split(":", 1)[0] not in named
            ]
        if changed:
            raise ConfigError(
                f"--resume: options differ from the checkpoint's ({'; '.join(changed)}); "
                f"resume with the same values or train into another --output-dir"
            )

    def _setup_data(self) -> None:
        config = self.config
        train_utts = read_manifest(config.train)
        if not train_utts:
            raise VoxadaptError(f"the training manifest {config.train} is empty")
        valid_utts: list[Utterance] = read_manifest(config.valid) if config.valid else []
        if config.valid and not valid_utts:
            raise VoxadaptError(f"the validation manifest {config.valid} is empty")
        if config.eval_samples and len(valid_utts) > config.eval_samples:
            valid_utts = random.Random(config.seed).sample(valid_utts, config.eval_samples)
        frontend = load_frontend(config.model)
        self.family = frontend.family
        if config.decode.language == MANIFEST_LANGUAGE:  # each record names its prompt's
            for utterance in [*train_utts, *valid_utts]:
                problem = utterance.language and self.family.language_problem(utterance.language)
                if problem:
                    raise VoxadaptError(f"utterance {utterance.id}: {problem}")
        self.spec = frontend.spec
        self.prompts = frontend.prompts
        self.store = FeatureStore(config.cache, self.spec) if config.cache else None
        language = config.decode.language
        self.train_set = TranscriptionDataset(
            train_utts,
            self.prompts,
            store=self.store,
            language=language,
            augment=config.spec_augment,
            speeds=config.speed_factors if config.speed_perturb else (1.0,),
            seed=config.seed,
        )
        self.valid_set = (
            TranscriptionDataset(valid_utts, self.prompts, store=self.store, language=language)
            if valid_utts
            else None
        )
        self.collator = Collator(self.spec, self.prompts.pad_id)

    def _setup_model(self) -> None:
        import torch

        config, dist = self.config, self.dist
        model = load_model(
            config.model,
            quantization=config.quantization,
            device=dist.device,
            dtype=resolve_dtype(config.dtype),
        )
        self.autocast_dtype = compute_dtype(model)
        if dist.main:
            where = "bitsandbytes on CPU" if dist.device.type == "cpu" else str(dist.device)
            dtype_name = str(self.autocast_dtype or torch.float32).removeprefix("torch.")
            log.info(
                "model %s: LLM quantization %s (%s), compute dtype %s",
                config.model,
                config.quantization,
                where,
                dtype_name,
            )
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model.config.use_cache = False
        self.adapter_options = config.adapter_options()
        torch.manual_seed(config.seed)  # identical adapter init on every rank
        self.model = attach_adapter(model, self.adapter_options)
        if dist.main:
            audit = format_audit(parameter_audit(self.model), describe_parts(self.adapter_options))
            log.info("parameters:\n%s", audit)
        # refuses to start if anything outside the chosen parts would train
        self.n_trainable = check_trainable_parts(self.model, config.train_modules)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.forward_model = torch.compile(self.model) if config.torch_compile else self.model
        self.transcriber = Transcriber(self.model, self.prompts, dist.device)

    def _setup_optimizer(self) -> None:
        import torch
        from transformers import get_scheduler

        config = self.config
        per_rank = math.ceil(len(self.train_set) / (config.batch_size * self.dist.world))
        self.micro_per_epoch = per_rank
        steps_per_epoch = max(1, math.ceil(per_rank / config.grad_accum))
        self.total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
        self.eval_every = config.eval_steps or steps_per_epoch
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = get_scheduler(
            config.scheduler,
            self.optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.state.total_steps = self.total_steps
        self.state.world_size = self.dist.world

    def _restore(self) -> None:
        """Load checkpoint-last: trainable weights, optimizer, scheduler, progress."""
        import torch

        weights = load_weights(self.last_dir / "trainable.safetensors")
        parameters = dict(self.model.named_parameters())
        unknown = [
            n for n in weights if n not in parameters or weights[n].shape != parameters[n].shape
        ]
        if unknown:
            raise VoxadaptError(
                f"checkpoint {self.last_dir} does not match this model/projector mode "
                f"(e.g. {unknown[0]})"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)
        # Our own file, and weights_only refuses anything but tensors and plain containers.
        try:
            saved = torch.load(
                self.last_dir / "optimizer.pt", map_location="cpu", weights_only=True
            )
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise VoxadaptError(
                f"{self.last_dir / 'optimizer.pt'} is unreadable (truncated or corrupt?): {exc}"
            ) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        state = json.loads((self.last_dir / "state.json").read_text(encoding="utf-8"))
        self.state = TrainState(**state)
        if self.state.world_size != self.dist.world:
            raise ConfigError(
                f"--resume: the checkpoint was trained by {self.state.world_size} processes, "
                f"this run has {self.dist.world}: resume with the same number (the epoch's "
                "position is counted per process)"
            )
        self.state.total_steps = self.total_steps
        self.state.world_size = self.dist.world
        if self.dist.main:
            log.info(
                "resumed at step %d of %d (epoch %d)",
                self.state.step,
                self.total_steps,
                self.state.epoch,
            )

    def _setup_logging(self) -> None:
        if not self.dist.main:
            return
        save_config(self.config, self.output_dir / "config.yaml")
        write_identity(self.output_dir, self.identity)
        # log.jsonl holds exactly the checkpoint's history: records of steps after it (a
        # killed run) are dropped, so a resumed run never logs a step twice.
        with atomic_write(self.output_dir / "log.jsonl") as handle:
            for record in self.state.log_history:
                handle.write(json.dumps(record) + "\n")
        self.trackers = Trackers(
            self.config.report_to,
            self.output_dir,
            run_name=self.output_dir.name,
            resume_step=self.state.step,
        )
        self.trackers.log_params(to_jsonable(self.config))

    # ------------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Train to total_steps (or early stop); evaluate every eval_every steps and at the end."""
        config, world = self.config, self.dist.world
        if self.dist.main:
            log.info(
                "world size %d, global batch size %d = %d per device x %d accumulation x %d; "
                "%d optimizer steps",
                world,
                config.batch_size * config.grad_accum * world,
                config.batch_size,
                config.grad_accum,
                world,
                self.total_steps,
            )
        self.model.train()
        self._reset_window()
        stop_early = False
        with (
            progress(
                self.total_steps, "train", "step", initial=self.state.step, enabled=self.dist.main
            ) as self.progress,
            StopFlag() as stop,
        ):
            while self.state.step < self.total_steps and not stop_early:
                stop_early = self._train_epoch(stop)
        if not stop_early:
            stop_early = self.evaluate()
        self.save_checkpoint()
        if self.dist.main and self.valid_set is None:
            self._save_adapter()
        if stop_early and self.dist.main:
            log.info(
                "early stopping: no better CER in %d evaluations",
                self.config.early_stopping_patience,
            )

    def _train_epoch(self, stop: StopFlag) -> bool:
        """Run the rest of the current epoch; True if early stopping says stop."""
        from torch.utils.data import DataLoader

        config, state = self.config, self.state
        self.train_set.epoch = state.epoch  # workers copy the dataset when the loader starts
        sampler = EpochSampler(
            len(self.train_set),
            seed=config.seed,
            epoch=state.epoch,
            dist=self.dist,
            start=state.micro_batches_in_epoch * config.batch_size,
        )
        loader = DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=config.num_workers,
            worker_init_fn=ignore_stop_signals if config.num_workers else None,
            persistent_workers=False,
        )
        batches = iter(loader)
        while True:
            # Every rank counts the same micro-batch slots, so all take the same optimizer
            # steps (and collectives); a rank whose share ran out fills its slots with
            # nothing and contributes no tokens.
            slots = min(config.grad_accum, self.micro_per_epoch - state.micro_batches_in_epoch)
            if slots <= 0:
                return False
            group = list(itertools.islice(batches, slots))
            self.accumulate(group)
            state.micro_batches_in_epoch += slots
            epoch_done = state.micro_batches_in_epoch >= self.micro_per_epoch
            self._optimizer_step()
            if epoch_done:
                state.epoch += 1
                state.micro_batches_in_epoch = 0
            stop_early = self._after_step()
            self._stop_if_requested(stop)
            if state.step >= self.total_steps or stop_early or epoch_done:
                return stop_early

    def accumulate(self, group: list[dict[str, Any]]) -> None:
        """Gradients of one optimizer step: the mean loss over every label token of the
        step's micro-batches on every rank, whatever the split into micro-batches and ranks
        (a short last step of an epoch included), as if it were one batch.

        Each micro-batch contributes its summed token losses divided by the step's global
        token count; `reduce_gradients` then sums over ranks.
        """
        import torch

        # LoRA dropout draws from torch's RNG: seeding it per (seed, step, rank) makes a
        # resumed run draw exactly what an uninterrupted one would.
        torch.manual_seed(self.config.seed * 1_000_003 + self.state.step * 1_009 + self.dist.rank)
        local = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in group)
        tokens = all_reduce_sum(torch.tensor(float(local)), self.dist).item()
        for batch in group:
            ids = batch.pop("ids")
            batch = {k: v.to(self.dist.device) for k, v in batch.items()}
            batch["input_features"] = batch["input_features"].to(input_dtype(self.model))
            with autocast(self.dist.device, self.autocast_dtype):
                loss_sum = label_positions_loss(self.forward_model, batch, reduction="sum")
            if not torch.isfinite(loss_sum):
                self.window["bad_ids"].extend(ids)
            (loss_sum / max(tokens, 1.0)).backward()
            self.window["loss_sum"] += float(loss_sum.detach())
            self.window["samples"] += batch["input_ids"].shape[0]
        self.window["tokens"] += local

    def reduce_gradients(self) -> None:
        """Sum the gradients over ranks (each rank's share is already divided by the
        step's global token count)."""
        import torch

        for parameter in self.parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            all_reduce_sum(parameter.grad, self.dist)

    def _optimizer_step(self) -> None:
        import torch

        self.reduce_gradients()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        )
        if not math.isfinite(grad_norm):  # identical on every rank after the all-reduce
            self.optimizer.zero_grad(set_to_none=True)
            bad = self.window["bad_ids"]
            where = f" (non-finite loss on {', '.join(bad[:5])})" if bad else ""
            kept = (
                f"; the best adapter so far is in {self.adapter_dir}"
                if (self.state.best_step is not None)
                else ""
            )
            raise NonFiniteError(
                f"non-finite gradient at step {self.state.step + 1}{where}: training stopped, "
                f"nothing from this step was saved{kept}; check the data "
                "(`voxadapt cache` re-verifies the feature cache) or lower --lr"
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.window["grad_norm"] = grad_norm

    def _after_step(self) -> bool:
        """Log, evaluate and checkpoint as scheduled; True if early stopping says stop."""
        step, config = self.state.step, self.config
        if step % config.logging_steps == 0 or step == self.total_steps:
            self._log_training(step)
        self.progress.update()  # after the log record, so a progress line shows its loss
        if step % self.eval_every == 0 and step < self.total_steps:
            stop_early = self.evaluate()
            self.save_checkpoint()
            self.window["start"] = time.perf_counter()  # samples/s counts training time only
            return stop_early
        return False

    def _stop_if_requested(self, stop: StopFlag) -> None:
        import torch

        flag = torch.tensor(float(stop.requested))
        if all_reduce_mean(flag, self.dist).item() > 0:  # every rank stops at the same step
            self.save_checkpoint()
            raise TrainingInterrupted(
                f"interrupted at step {self.state.step}/{self.total_steps}; checkpoint saved "
                f"in {self.last_dir}; continue with --resume"
            )

    def _reset_window(self) -> None:
        self.window: dict[str, Any] = {
            "loss_sum": 0.0,
            "tokens": 0,
            "samples": 0,
            "start": time.perf_counter(),
            "bad_ids": [],
            "grad_norm": 0.0,
        }

    def _log_training(self, step: int) -> None:
        # the mean over every label token of the window's steps, on all ranks
        import torch

        totals = torch.tensor(
            [self.window["loss_sum"], float(self.window["tokens"]), float(self.window["samples"])]
        )
        loss_sum, tokens, samples = all_reduce_sum(totals, self.dist).tolist()
        loss_value = loss_sum / max(tokens, 1.0)
        elapsed = time.perf_counter() - self.window["start"]
        record = {
            "step": step,
            "epoch": self.state.epoch,
            "loss": loss_value,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "grad_norm": self.window["grad_norm"],
            "samples": int(samples),  # examples trained on since the last record
            "samples_per_second": samples / elapsed,
        }
        self._log_record(record)
        summary = (
            f"loss {loss_value:.4f}, lr {record['learning_rate']:.2e}, "
            f"grad_norm {record['grad_norm']:.3f}, {record['samples_per_second']:.1f} samples/s"
        )
        self.progress.note(summary)  # the bar's postfix on a terminal
        if self.dist.main and self.progress.bar is None:
            # In a log file every --logging-steps record is a line, as the HF Trainer prints
            # its loss dicts; the periodic progress line (ETA) comes on its own interval.
            epoch = self.state.epoch + self.state.micro_batches_in_epoch / self.micro_per_epoch
            log.info("step %d/%d, epoch %.2f: %s", step, self.total_steps, epoch, summary)
        self._reset_window()

    def _log_record(self, record: dict[str, Any]) -> None:
        self.state.log_history.append(record)
        if not self.dist.main:
            return
        assert self.trackers is not None
        self.trackers.log({k: v for k, v in record.items() if k != "step"}, record["step"])
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> bool:
        """CER on the valid set; keep the best adapter. True if early stopping says stop."""
        if self.valid_set is None:
            return False
        started = time.perf_counter()
        metrics = self._valid_metrics()
        metrics["eval_seconds"] = time.perf_counter() - started
        state, cer = self.state, metrics["eval_cer"]
        if cer is not None and (state.best_cer is None or cer < state.best_cer):
            state.best_cer, state.best_step = cer, state.step
            state.evals_without_improvement = 0
            if self.dist.main:
                self._save_adapter()
        else:
            state.evals_without_improvement += 1
        self._log_record(
            {"step": state.step, "epoch": state.epoch, **metrics, "best_cer": state.best_cer}
        )
        if self.dist.main:
            log.info(
                "step %d: eval CER %s, WER %s (best CER %s at step %s), %.0f s",
                state.step,
                percent(cer),
                percent(metrics["eval_wer"]),
                percent(state.best_cer),
                state.best_step,
                metrics["eval_seconds"],
            )
        patience = self.config.early_stopping_patience
        return bool(patience and state.evals_without_improvement >= patience)

    def _valid_metrics(self) -> dict[str, Any]:
        """Decode this rank's share with the decoding engine; score all shares together."""
        import torch

        valid = self.valid_set
        assert valid is not None
        mine = list(range(self.dist.rank, len(valid), self.dist.world))
        items = [AudioItem.from_utterance(valid.utterances[i]) for i in mine]
        source = FeatureSource(
            items, self.spec, store=self.store, keys=[valid.keys[i] for i in mine]
        )
        rows, failed = [], 0
        # rank 0 shows its share's decoding: below the training bar, or as log lines
        desc = f"eval at step {self.state.step}"
        with AudioProgress(items, desc, leave=False, enabled=self.dist.main) as bar:
            decoded = self.transcriber.transcribe(items, self.config.decode, source, bar.token)
            for batch in decoded:
                for item, result in batch:
                    if isinstance(result, AudioError):
                        failed += 1
                        continue
                    rows.append({"id": item.id, **score_row(item.record["text"], result.text)})
                bar.done([item for item, _ in batch])
        if self.dist.world > 1:
            gathered: list[Any] = [None] * self.dist.world
            torch.distributed.all_gather_object(gathered, (rows, failed))
            rows = [row for part, _ in gathered for row in part]
            failed = sum(n for _, n in gathered)
        metrics = corpus_metrics(rows)
        return {
            "eval_cer": metrics.get("cer"),
            "eval_wer": metrics.get("wer"),
            "eval_utterances": len(rows),
            "eval_failed": failed,
        }

    # ------------------------------------------------------------------ saving

    def _save_adapter(self) -> None:
        info = {
            "base_model": str(self.config.model),
            "quantization": self.config.quantization,
            "language": self.config.decode.language,
            "step": self.state.step,
        }
        if self.family is not VOXTRAL:  # adapters without a family are Voxtral's (as before)
            info["family"] = self.family.name
        fingerprint = model_fingerprint(self.config.model)
        if fingerprint:  # a local base: a moved copy of it is recognised
            info["base_model_fingerprint"] = fingerprint
        if self.state.best_step == self.state.step and self.state.best_cer is not None:
            info["eval_cer"] = self.state.best_cer
        save_adapter(self.model, self.adapter_dir, self.adapter_options, info)

    def save_checkpoint(self) -> None:
        """checkpoint-last (atomically: temp folder, then rename) and trainer_state.json."""
        import torch

        if not self.dist.main:
            return
        from safetensors.torch import save_file

        tmp = self.last_dir.with_name(self.last_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weights = trainable_state(self.model)
        # trainable weights + AdamW's two moments per weight: what the files will hold
        needed = sum(t.nbytes for t in weights.values()) + sum(
            t.nbytes
            for state in self.optimizer.state.values()
            for t in state.values()
            if torch.is_tensor(t)
        )
        try:  # a full disk: one line; the partial checkpoint goes, the earlier one stays
            with writing_weights(tmp, needed_bytes=needed):
                save_file(weights, str(tmp / "trainable.safetensors"))
                torch.save(
                    {
                        "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                    },
                    tmp / "optimizer.pt",
                )
                (tmp / "state.json").write_text(json.dumps(self.state.__dict__, indent=1), "utf-8")
                save_config(self.config, tmp / "config.yaml")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        honour_umask(tmp)
        swap_in(tmp, self.last_dir, self.last_dir.with_name(self.last_dir.name + ".old"))
        with atomic_write(self.output_dir / "trainer_state.json") as handle:
            json.dump(self.state.__dict__, handle, indent=1)

    def close(self, *, finished: bool = True) -> None:
        """End the trackers' runs; after a finished run, wait for every rank; release the
        output folder."""
        import torch

        try:
            if self.trackers is not None:
                self.trackers.close()
                self.trackers = None
            if finished and self.dist.world > 1:
                torch.distributed.barrier()
        finally:
            if self.claim is not None:
                self.claim.release()


def train(config: TrainConfig) -> TrainResult:
    """Train the projector; see TrainConfig. Returns where the adapter went and the state."""
    trainer = Trainer(config)
    try:
        trainer.setup()
        trainer.fit()
    except BaseException:  # trackers end their runs after an interrupt or an error too
        trainer.close(finished=False)
        raise
    trainer.close()
    return TrainResult(trainer.output_dir, trainer.adapter_dir, trainer.state, trainer.n_trainable)
