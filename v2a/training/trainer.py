"""The training loop: :class:`Trainer` (one run) and :func:`train`.

:meth:`Trainer.run` reads top to bottom as what a run does; each piece it calls is a named
method below it (one optimiser step is :meth:`Trainer._step`). The determinism it keeps and the
files it writes are described in :mod:`v2a.training`.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from v2a.distributed import Distributed, setup_distributed
from v2a.files import write_text_atomic
from v2a.hub import COMMITS_RECORD, record_commits, recording_commits
from v2a.items import collate
from v2a.log import note
from v2a.recipe import Recipe
from v2a.sampler import allow_tf32, compile_layers, require_compiler
from v2a.tasks import (
    TrainingError,
    build_task,
    checked_exports,
    task_spec,
    trained_state,
)
from v2a.training.checkpoints import (
    checkpoint_state,
    checkpoints,
    fingerprint,
    latest_checkpoint,
    optimizer_files,
    read_resumable_state,
    remove_temporary,
    restore_weights,
    write_checkpoint,
    write_export,
)
from v2a.training.data_order import ClipOrder, MicroBatches, derived_seed
from v2a.training.loading import open_split, worker_errors
from v2a.training.requirements import check_trainable
from v2a.training.samples import AudioSamples
from v2a.training.schedules import EMA, learning_rate

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The terms the progress line shows (TensorBoard gets every term).
SHOWN_TERMS = ("loss", "ce", "aux_regression", "aux_contrastive", "accuracy", "temperature", "lr",
               "grad_norm")


class StopRequest:
    """While active (a ``with`` block, in the main thread): SIGINT and SIGTERM ask for a
    checkpoint and a clean exit after the current step (:attr:`signal` is set); a second
    Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class TrainResult:
    out_dir: Path
    step: int  # optimiser steps done
    stopped_by: int | None = None  # the signal that stopped the run early
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # last logged values
    exported: list[Path] = field(default_factory=list)


@dataclass
class LogWindow:
    """What the steps since the last log line add up to (this rank)."""

    terms: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    wait: float = 0.0
    frames: float = 0.0
    clips: float = 0.0
    steps: int = 0

    def add(self, terms: dict[str, Tensor], *, seconds: float, wait: float, frames: float,
            clips: float) -> None:
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0) + v
        self.seconds += seconds
        self.wait += wait
        self.frames += frames
        self.clips += clips
        self.steps += 1


def loss_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The step's gradient scaler: enabled for ``fp16`` only, whose small gradients underflow
    without loss scaling; bf16 has float32's exponent range and needs none. Every step calls
    it (scale, unscale before clipping, step, update), so a disabled one leaves fp32 and bf16
    steps exactly as they would be without it."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def run_dir_for(recipe: Recipe, out: str | Path | None) -> Path:
    return Path(out) if out else Path(recipe.training.out_dir) / recipe.name


class Trainer:
    """One training run. Most users call :func:`train`; tests and notebooks may hand their own
    datasets (map-style, items for :func:`v2a.items.collate`) to the constructor."""

    def __init__(self, recipe: Recipe, *, out_dir: str | Path | None = None, resume: bool = False,
                 train_data=None, val_data=None, collate_fn=None,
                 distributed: Distributed | None = None, device: str | None = None,
                 quiet: bool = False):
        self.recipe, self.cfg = recipe, recipe.training
        self.dist = distributed or setup_distributed(device)
        self.device = self.dist.device
        allow_tf32(self.device)
        self.out = run_dir_for(recipe, out_dir)
        self.resume = resume

        out = ("--out", str(self.out)) if out_dir is not None else ()
        self.resume_command = recipe.command_line("train", "--resume", *out)
        self.quiet = quiet
        self.collate = collate_fn or collate
        self.spec = task_spec(recipe)
        check_trainable(recipe, self.spec, self.device)
        if self.cfg.compile:
            require_compiler(self.device, "training.compile")
        self.train_data = train_data if train_data is not None else open_split(recipe, self.cfg.train_split)
        if len(self.train_data) == 0:
            raise TrainingError(f"the {self.cfg.train_split!r} split of the data holds no clips")
        if val_data is None and (self.cfg.eval_every or self.cfg.sample_every):
            val_data = open_split(recipe, self.cfg.val_split)
        self.val_data = val_data if val_data is not None and len(val_data) else None
        self.skipped: set[tuple[str, str]] = {  # clips the feature extraction could not use
            (item.clip.id, item.reason) for data in (self.train_data, self.val_data)
            for item in getattr(data, "skipped", None) or []}
        self._checked = False
        self._last_batch = None
        self._term_names: list[str] = []
        self.samples = AudioSamples(recipe, device=self.device, collate=self.collate)

    # -- helpers ------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """A line of the run's progress report (stdout, main process, unless quiet)."""
        if self.dist.main and not self.quiet:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def _note(self, text: str) -> None:
        if self.dist.main:
            note(text)

    def _loader(self, dataset, batch_sampler):
        workers = self.recipe.data.num_workers
        kwargs = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, collate_fn=self.collate, num_workers=workers,
            pin_memory=self.device.type == "cuda", **kwargs,
        )

    @contextlib.contextmanager
    def _writing(self, what: str, folder: Path) -> Iterator[None]:
        """Write ``what`` into ``folder`` of the run; a folder that refuses it (read-only, no
        permission, a full disk) ends the run with a :class:`TrainingError` naming the folder,
        the error and the last good checkpoint."""
        try:
            yield
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            once = "its disk has space again" if full else "the folder is writable"
            last = latest_checkpoint(self.out)
            if last is None:
                then = f"no checkpoint was saved yet: start again once {once}"
            else:
                then = (f"the last good checkpoint is {last}: resume with "
                        f"`{self.resume_command}` once {once}")
            raise TrainingError(
                f"cannot write {what} into {folder} ({exc.strerror or exc}); {then}") from None

    def _note_skipped(self, batch) -> None:
        for item in getattr(batch, "skipped", []) or []:
            self.skipped.add((item.clip.id, item.reason))

    def _autocast(self):
        """``training.precision``: bf16 or fp16 autocast on the trainer's device (the weights,
        the optimiser state and the gradients stay float32), or nothing for fp32."""
        dtype = PRECISIONS[self.cfg.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # -- model and optimiser ------------------------------------------------------------------
    def _build(self) -> None:
        torch.manual_seed(derived_seed(self.cfg.seed, "init"))
        self.task = build_task(self.recipe).to(self.device).train()
        for module in self.task.frozen:  # frozen encoders: no gradients, no dropout
            module.requires_grad_(False).eval()
        params = [(n, p) for n, p in self.task.named_parameters() if p.requires_grad]
        self.params = [p for _, p in params]
        decay = [p for _, p in params if p.dim() >= 2]  # matrices decay; biases, norms do not
        no_decay = [p for _, p in params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.cfg.lr,
        )
        self.scaler = loss_scaler(self.cfg.precision, self.device)
        self.ema = EMA(self.task, self.cfg.ema, self.task.frozen) if self.cfg.ema > 0 else None
        if self.cfg.compile:  # in place: same parameters and state dict; the EMA copy stays eager
            if not compile_layers(self.task):
                self._note(f"training.compile: the {self.cfg.task} task has no repeated layers "
                           "(nn.ModuleList) to compile; it runs eagerly")
        self.model = self.task
        if self.dist.enabled:
            # find_unused_parameters: a step may leave a part unused (the contrastive head when
            # fewer than two rows keep their conditioning, the fuser when all rows drop it)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.task, device_ids=ids, find_unused_parameters=True,
            )

    @property
    def eval_task(self) -> nn.Module:
        """The weights used for validation and samples: EMA when on."""
        return self.ema.module if self.ema is not None else self.task

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, step: int, consumed: int, metrics: dict[str, float]) -> Path:
        model = trained_state(self.task)
        ema = trained_state(self.ema.module) if self.ema is not None else None
        prints = None
        if self.dist.enabled:  # all ranks must hold the same weights
            prints = self.dist.gather({"model": fingerprint(model),
                                       "ema": fingerprint(ema) if ema is not None else None})
            if any(p != prints[0] for p in prints):
                raise RuntimeError(f"the ranks' weights differ at step {step}: {prints}")
        path = Path(self.out) / "checkpoints" / f"step_{step:08d}"
        if self.dist.main:
            state = checkpoint_state(
                self.recipe, step=step, consumed=consumed, dataset_size=len(self.train_data),
                world_size=self.dist.world_size, optimizer=self.optimizer, scaler=self.scaler,
                metrics=metrics)
            state["rank_fingerprints"] = prints
            opt_tensors, _ = optimizer_files(self.optimizer)
            files = {"model": model, "optimizer": opt_tensors}
            if ema is not None:
                files["ema"] = ema
            with self._writing(f"the checkpoint of step {step}", self.out / "checkpoints"):
                path = write_checkpoint(self.out, step, files, state, self.cfg.keep_checkpoints)
        self.dist.barrier()
        return path

    def restore(self, path: Path) -> dict[str, Any]:
        state = read_resumable_state(path, self.recipe, run_dir=self.out,
                                     dataset_size=len(self.train_data))
        restore_weights(path, state, task=self.task,
                        ema=self.ema.module if self.ema is not None else None,
                        optimizer=self.optimizer, device=self.device)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if state["world_size"] != self.dist.world_size:
            self._note(f"{path} was written by {state['world_size']} processes, this run has "
                       f"{self.dist.world_size}: the clips per step change from here on")
        return state

    # -- validation and samples -----------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean terms over the validation split (sharded over the ranks), with the EMA weights and
        fixed masks, weighted by clips."""
        task, b = self.eval_task, self.cfg.batch_size
        was_training = task.training
        task.eval()
        # batch j holds clips [j·b, (j + 1)·b) and goes to rank j % world_size, with masks from
        # (seed, j): the result does not depend on the number of processes
        n = len(self.val_data)
        mine = list(range(self.dist.rank, -(-n // b), self.dist.world_size))
        loader = self._loader(self.val_data, [list(range(j * b, min((j + 1) * b, n))) for j in mine])
        sums: dict[str, float] = {}
        count = 0
        for j, batch in zip(mine, worker_errors(loader)):
            self._note_skipped(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device, non_blocking=True)
            g = torch.Generator(device=self.device).manual_seed(derived_seed(self.cfg.seed, "val", j))
            with self._autocast():
                terms = task(batch, g)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
            count += len(batch)
        task.train(was_training)
        keys = sorted(self._term_names)
        totals = self.dist.all_sum([sums.get(k, 0.0) for k in keys] + [count])
        n = totals[-1]
        return {k: totals[i] / n for i, k in enumerate(keys)} if n else {}

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train from the last checkpoint (``--resume``) or from scratch to ``training.steps``,
        then export the weights to use."""
        cfg = self.cfg
        start, consumed, result = self._start()
        if start >= cfg.steps:
            self._note(f"{self.out} has finished its {cfg.steps} steps already")
            result.exported = self._export()
            return result
        writer = self._open_writer(start)
        sampler = MicroBatches(ClipOrder(len(self.train_data), cfg.seed), start=consumed,
                               batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                               rank=self.dist.rank, world_size=self.dist.world_size)
        batches = worker_errors(self._loader(self.train_data, sampler))
        self.log(self._describe(start))
        for text in self.task.notes:
            self._note(text)
        bar = self._progress_bar(start)
        window, metrics, step = LogWindow(), {}, start
        try:
            with StopRequest() as stop:
                while step < cfg.steps:
                    began = time.perf_counter()
                    terms, wait, frames, clips = self._step(step, batches)
                    step += 1
                    consumed += sampler.clips_per_step
                    window.add(terms, seconds=time.perf_counter() - began, wait=wait,
                               frames=frames, clips=clips)
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        metrics = self._log_train(writer, step, window)
                        bar.set_postfix(loss=f"{metrics.get('train/loss', float('nan')):.4f}")
                        window = LogWindow()
                    metrics.update(self._validate_and_sample(writer, step))
                    stopping = self.dist.all_sum([1.0 if stop.signal is not None else 0.0])[0] > 0
                    if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                        result.checkpoint = self.save(step, consumed, metrics)
                    if stopping:
                        result.stopped_by = stop.signal or signal.SIGTERM
                        name = signal.Signals(result.stopped_by).name
                        self.log(f"{name}: stopped at step {step}; checkpoint {result.checkpoint}; "
                                 f"continue with `{self.resume_command}`")
                        break
        except BaseException:
            self._close(bar, writer, failed=True)
            raise
        self._close(bar, writer)
        return self._finish(result, step, metrics)

    def _start(self) -> tuple[int, int, TrainResult]:
        """Prepare the run folder, build the model, restore the last checkpoint when resuming and
        save the resolved recipe: ``(steps done, clips consumed, the result so far)``."""
        self._prepare_out_dir()
        with recording_commits() as commits:  # the hf:// weights' commits, for hub.json
            self._build()
        start, consumed = 0, 0
        checkpoint = latest_checkpoint(self.out) if self.resume else None
        if checkpoint is not None:
            state = self.restore(checkpoint)
            start, consumed = state["step"], state["clips_consumed"]
            self.log(f"resumed from {checkpoint} (step {start})")
        elif self.resume:
            self._note(f"no checkpoint in {self.out}; starting a new run")
        if self.dist.main:
            with self._writing("recipe.yaml", self.out):
                write_text_atomic(self.out / "recipe.yaml", f"# resolved recipe of this run "
                                  f"({self.recipe.source})\n" + self.recipe.to_yaml())
            with self._writing(COMMITS_RECORD, self.out):
                record_commits(self.out, commits)
        return start, consumed, TrainResult(out_dir=self.out, step=start, checkpoint=checkpoint)

    def _open_writer(self, start: int):
        """The TensorBoard writer (rank 0 only; ``None`` elsewhere), dropping the events an
        interrupted run logged after step ``start``."""
        if not self.dist.main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        with self._writing("the TensorBoard logs", self.out / "tensorboard"):
            return SummaryWriter(str(self.out / "tensorboard"), purge_step=start)

    def _progress_bar(self, start: int):
        from tqdm import tqdm

        return tqdm(total=self.cfg.steps, initial=start, unit="step", dynamic_ncols=True,
                    disable=None if self.dist.main and not self.quiet else True, file=sys.stderr)

    def _validate_and_sample(self, writer, step: int) -> dict[str, float]:
        """At the steps ``eval_every`` and ``sample_every`` ask for (and the last): the
        validation terms (logged; returned as ``val/<term>``), and audio samples."""
        cfg, metrics = self.cfg, {}
        last = step == cfg.steps
        if self.val_data is not None and cfg.eval_every and (step % cfg.eval_every == 0 or last):
            val = self.validate()
            metrics = {f"val/{k}": v for k, v in val.items()}
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(k, v, step)
            self.log(f"step {step}/{cfg.steps}  validation " + "  ".join(
                f"{k} {v:.4f}" for k, v in val.items()))
        if self.dist.main and cfg.sample_every and (step % cfg.sample_every == 0 or last):
            self.samples.log(writer, self.eval_task, self.val_data, step)
        return metrics

    def _close(self, bar, writer, *, failed: bool = False) -> None:
        """Close the progress bar and the TensorBoard writer; after a failure, a writer that
        cannot flush (the run folder may be what failed) is left as it is."""
        bar.close()
        if writer is None:
            return
        if failed:
            with contextlib.suppress(OSError):
                writer.close()
            return
        with self._writing("the TensorBoard logs", self.out / "tensorboard"):
            writer.close()

    def _finish(self, result: TrainResult, step: int, metrics: dict[str, float]) -> TrainResult:
        result.step, result.metrics = step, metrics
        self._report_skipped()
        if step >= self.cfg.steps:
            result.exported = self._export()
            self.log(f"finished {self.cfg.steps} steps; weights: "
                     + ", ".join(str(p) for p in result.exported))
        return result

    def _step(self, step: int, batches) -> tuple[dict[str, Tensor], float, float, float]:
        """One optimiser step over ``grad_accum`` micro-batches: the mean terms, the seconds spent
        waiting for data, the code frames and clips it trained on (this rank)."""
        cfg = self.cfg
        lr = learning_rate(step, lr=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps, lr_min=cfg.lr_min)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        terms: dict[str, Tensor] = {}
        wait = frames = clips = 0.0
        for micro in range(cfg.grad_accum):
            t = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t
            self._note_skipped(batch)
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.model.no_sync()
            weight = 1.0 / cfg.grad_accum
            if len(batch) == 0:  # every clip of it was skipped (decoding on the fly)
                if not self.dist.enabled:
                    continue
                if self._last_batch is None:
                    raise TrainingError(f"every clip of the first batch of rank {self.dist.rank} "
                                        "was skipped; check the data (see `v2a extract`)")
                batch, weight = self._last_batch, 0.0  # DDP needs a backward from every rank
            else:
                clips += len(batch)
                frames += float(batch.valid.sum()) if batch.valid is not None else 0.0
                batch = batch.to(self.device, non_blocking=True)
                self._last_batch = batch if self.dist.enabled else None
            with sync:
                if not self._checked:
                    self.task.check_batch(batch)
                    self._checked = True
                slot = micro * self.dist.world_size + self.dist.rank
                torch.manual_seed(derived_seed(cfg.seed, "dropout", step, slot))  # model dropout
                g = torch.Generator(device=self.device).manual_seed(
                    derived_seed(cfg.seed, "objective", step, slot))  # masks, condition dropout
                with self._autocast():
                    out = self.model(batch, g)
                self.scaler.scale(out["loss"] * weight).backward()
            for k, v in out.items():
                terms[k] = terms.get(k, 0) + v.detach().float() * weight
        if not self._term_names:
            self._term_names = sorted(terms)
        self.scaler.unscale_(self.optimizer)
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if "loss" in terms and not torch.isfinite(terms["loss"]) and not self.scaler.is_enabled():
            raise TrainingError(
                f"the loss is not finite at step {step + 1} (lr {lr:.3g}); lower training.lr or "
                "use training.precision=fp32, and resume from the last checkpoint with --resume"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        terms["grad_norm"] = norm.detach().float()
        terms["lr"] = torch.tensor(lr)  # on the host on purpose: logged, never computed with
        return terms, wait, frames, clips

    def _log_train(self, writer, step: int, window: LogWindow) -> dict[str, float]:
        """The mean terms of the window's steps over the ranks, and the throughput: logged to
        TensorBoard and as one line."""
        n = max(window.steps, 1)
        keys = sorted(window.terms)
        local = [float(window.terms[k]) / n for k in keys]
        totals = self.dist.all_sum(local + [window.frames, window.clips, window.wait])
        world = self.dist.world_size
        metrics = {f"train/{k}": totals[i] / world for i, k in enumerate(keys)}
        frames, clips, wait = totals[len(keys):]
        seconds = max(window.seconds, 1e-9)
        metrics["perf/frames_per_s"] = frames / seconds
        metrics["perf/clips_per_s"] = clips / seconds
        metrics["perf/data_wait_share"] = wait / world / seconds
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, step)
        shown = "  ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in metrics.items()
                          if k.split("/")[1] in SHOWN_TERMS)
        self.log(f"step {step}/{self.cfg.steps}  {shown}  {metrics['perf/clips_per_s']:.3g} clips/s  "
                 f"data wait {100 * metrics['perf/data_wait_share']:.1f}%")
        return metrics

    def _describe(self, start: int) -> str:
        c, n = self.cfg, sum(p.numel() for p in self.params)
        where = f"{self.dist.world_size} processes" if self.dist.enabled else str(self.device)
        val = f", {len(self.val_data)} for validation" if self.val_data is not None else ""
        return (f"training the {c.task} of {self.recipe.name} ({n / 1e6:.2f} M parameters) on {where}: "
                f"{len(self.train_data)} clips{val}; steps {start + 1}-{c.steps}, "
                f"{c.batch_size * c.grad_accum * self.dist.world_size} clips per step, "
                f"{c.precision}{', compiled' if c.compile else ''}; output {self.out}")

    def _prepare_out_dir(self) -> None:
        if self.dist.main:
            if not self.resume and latest_checkpoint(self.out) is not None:
                step = checkpoints(self.out)[-1][0]
                raise TrainingError(
                    f"{self.out} holds a run already (checkpoint of step {step}); pass --resume to "
                    "continue it, or --out DIR for a new run"
                )
            with self._writing("files", self.out):
                self.out.mkdir(parents=True, exist_ok=True)
                remove_temporary(self.out)
        self.dist.barrier()

    def _report_skipped(self) -> None:
        everything = set()
        for part in self.dist.gather(sorted(self.skipped)):
            everything.update(tuple(x) for x in part)
        if self.dist.main and everything:
            lines = sorted(everything)
            with self._writing("skipped.tsv", self.out):
                write_text_atomic(self.out / "skipped.tsv", "".join(f"{i}\t{r}\n" for i, r in lines))
            self.log(f"{len(lines)} clips were skipped (listed in {self.out / 'skipped.tsv'}):")
            for clip_id, reason in lines[:10]:
                self.log(f"  {clip_id}: {reason}")
            if len(lines) > 10:
                self.log(f"  ... and {len(lines) - 10} more")

    def _export(self) -> list[Path]:
        """The weights to use (EMA when on): one file per trained slot, named as the task's spec
        declares, in ``training.export_dtype`` (:func:`~v2a.training.checkpoints.write_export`)."""
        paths = []
        if self.dist.main:
            for slot, module in checked_exports(self.spec, self.eval_task).items():
                path = self.out / self.spec.export_files[slot]
                with self._writing(path.name, self.out):
                    write_export(module, path, dtype=self.cfg.export_dtype,
                                 metadata={"recipe": self.recipe.name, "component": slot})
                paths.append(path)
        self.dist.barrier()
        return paths


def train(recipe: Recipe, *, out_dir: str | Path | None = None, resume: bool = False,
          device: str | None = None, **kwargs) -> TrainResult:
    """Train ``recipe`` (a loaded :class:`~v2a.recipe.Recipe`) into ``out_dir`` (default:
    ``training.out_dir/<recipe name>``); under torchrun, every process calls this."""
    trainer = Trainer(recipe, out_dir=out_dir, resume=resume, device=device, **kwargs)
    return trainer.run()
