"""`solve train`: train a task model and write it in Hugging Face layout with its model card."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import typer

from ..core import CheckpointError, DiffusionGemma, load_model, write_atomically
from ..core.provenance import cpu_name, source_description
from ..tasks.text import plural
from .checkpoints import check_task_model
from .cli_common import (CANNOT_WRITE, DEVICE, OPTIONS, above_zero, app, check_device_option, console, error, finite,
                         interrupted, naming, refuse_closed_stdout, usage_error, working)

if TYPE_CHECKING:
    from ..core.training import TrainConfig


TASKS = ("sorting", "sudoku", "molecules", "graphs")
PREPARED_SETS = ("sudoku", "molecules")  # the tasks solve train trains on a prepared set; the others draw afresh
DEFAULT_EXAMPLES, DEFAULT_WORKERS = 50_000, 2  # the prepared sets' size and the processes that build them
MAX_WORKERS = 256  # a typo must not start thousands of processes
MAX_DEEPEN = 8  # --deepen 1000 built 4,000 layers (16 GB, 2 GB written) before anyone could stop it
# Peak learning rates: from scratch, and from --init weights (the shipped models' warm-start stages used 3e-4 to
# 5e-4; the scratch rate's first steps under a fresh optimizer wipe out what a small trained model knows).
SCRATCH_LR, WARM_START_LR = 2e-3, 5e-4
WARM_START_WARMUP = 10  # at least these warmup steps from --init, however short the run


@dataclass(frozen=True)
class TrainOptions:
    """What `solve train` was asked for. `lr`, `examples` and `workers` are None until `with_defaults`."""

    task: str
    out: Path
    steps: int
    batch_size: int
    lr: float | None
    seed: int
    device: str
    threads: int
    time_budget: float | None
    data: Path | None
    examples: int | None
    workers: int | None
    init: Path | None
    deepen: int
    compiled: bool

    def with_defaults(self) -> "TrainOptions":
        return replace(self, lr=(SCRATCH_LR if self.init is None else WARM_START_LR) if self.lr is None else self.lr,
                       examples=DEFAULT_EXAMPLES if self.examples is None else self.examples,
                       workers=DEFAULT_WORKERS if self.workers is None else self.workers)

    def train_config(self, module: ModuleType) -> TrainConfig:
        """The engine's settings for this run of the task `module` (after `with_defaults`)."""
        from ..core import files_digest
        from ..core.training import TrainConfig

        path = self.init
        init = None if path is None else str(path.resolve() if path.exists() else path)  # or a hub id
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           device=self.device,
                           warmup_steps=min(200, max(self.steps // 10, 0 if init is None else WARM_START_WARMUP)),
                           checkpoint_every=max(1, min(500, self.steps // 4)), bf16=self.device.startswith("cuda"),
                           time_budget_s=self.time_budget, ar_weight=getattr(module, "AR_WEIGHT", 1.0),
                           compile=self.compiled,
                           init=None if init is None else init + f", {self.deepen}x deeper" * (self.deepen > 1),
                           data=None if self.data is None else files_digest([self.data]))

    def command(self) -> str:
        """The command that reproduces the run, for its model card."""
        task, data, init = self.task, self.data, self.init
        return (("solve --compile" if self.compiled else "solve")
                + f" train {task} --out {self.out} --steps {self.steps} --batch-size {self.batch_size}"
                + f" --lr {self.lr} --seed {self.seed} --device {self.device}"
                + (f" --time-budget {self.time_budget:g}" if self.time_budget else "")
                + (f" --examples {self.examples}" if task in PREPARED_SETS and data is None else "")
                + (f" --workers {self.workers}" if task == "sudoku" and data is None else "")
                + (f" --threads {self.threads}" if self.device == "cpu" else "")
                + (f" --data {data}" if data else "") + (f" --init {init}" if init else "")
                + (f" --deepen {self.deepen}" if self.deepen > 1 else ""))


@app.command()
def train(
    context: typer.Context,
    task: str = typer.Argument(..., metavar="TASK", help=f"Task to train: {', '.join(TASKS)}."),
    out: str = typer.Option(..., metavar="DIR", help="Run directory: checkpoints, log, and the final model in "
                                                      "out/model."),
    steps: int = typer.Option(3000, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(64, min=1, help="Examples per step."),
    lr: float = typer.Option(None, callback=above_zero, show_default=False,
                             help="Peak learning rate (warmup then cosine) "
                             f"[default: {SCRATCH_LR:g}; with --init {WARM_START_LR:g}, gentle enough to keep what "
                             "the model knows]."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Seed for initialisation and data."),
    device: str = DEVICE,
    threads: int = typer.Option(2, min=1, help="CPU threads for torch."),
    time_budget: float = typer.Option(None, min=1, callback=finite,
                                      help="Stop after this many seconds; the learning-rate schedule then follows "
                                      "the clock (default: no limit, the schedule follows --steps)."),
    data: Path = typer.Option(None, help="Sudoku/molecules: training set .npz (made in the run directory if absent)."),
    examples: int = typer.Option(None, min=1, show_default=False,
                                 help="Sudoku/molecules: size of the generated base set / MOSES subset [default: "
                                      f"{DEFAULT_EXAMPLES}]."),
    workers: int = typer.Option(None, min=1, max=MAX_WORKERS, show_default=False,
                                help="Sudoku/molecules: processes preparing the training set (Sudoku: each generates "
                                     "its share from its own seed, so the count is part of the data) [default: "
                                     f"{DEFAULT_WORKERS}]."),
    init: Path = typer.Option(None, help="Start from this model (its weights and size; fresh optimizer and "
                              "schedule) instead of a seeded initialisation; any model of the task (the same "
                              "vocabulary and canvas)."),
    deepen: int = typer.Option(1, min=1, max=MAX_DEEPEN, help="With --init: train a model this many times deeper, "
                               "each layer of --init followed by copies of itself that start as the identity (so "
                               "training starts from what --init computes)."),
) -> None:
    """Train a task model with the DiffusionGemma objective (from scratch or --init weights); resumes a run.

    What each task trains on: sudoku, puzzles it generates (a cached base set under random symmetries);
    molecules, a subset of the MOSES training split (read from the molsets==0.3.1 wheel: `make moses`);
    graphs and sorting, instances drawn afresh for every batch. The shipped models' cards
    (models/TASK/README.md in the repository) give the commands that made them.

    Running the same command again continues from the run's last checkpoint (with more --steps, a longer run);
    the recipe (batch size, learning rate, seed) must stay the same. The summary JSON goes to stdout, log lines
    to stderr and out/train_log.jsonl. Exit status: 0 trained, 1 the loss diverged (inf or NaN; the last
    checkpoint is kept), 2 bad input, 74 a checkpoint could not be written (a full disk; the last one is kept),
    130 interrupted, also by SIGTERM or SIGHUP (checkpointed)."""
    from ..core.training import ResumeError, TrainingDiverged, TrainingInterrupted, read_training_state
    from ..core.training import train as run_training

    if not out.strip():  # Path("") is the current folder: a slip of the shell would scatter a run's files there
        usage_error("--out is empty: name the run directory (e.g. --out runs/sudoku; --out . is the current folder)")
    out = Path(out)
    options = TrainOptions(task, out, steps, batch_size, lr, seed, device, threads, time_budget, data, examples,
                           workers, init, deepen, OPTIONS["compile"])
    _check_train_options(options)
    refuse_closed_stdout()  # the summary goes there: a run that cannot report it is refused before it trains
    options = options.with_defaults()
    torch.set_num_threads(threads)
    module = _task_modules()[task]
    model = _initial_model(options, module)  # before the run directory: a refused --init
    created = not out.exists()
    lock = _lock_run_dir(out)  # before the training set is built: that can take minutes
    context.call_on_close(lock.release)
    cfg = options.train_config(module)
    previous = _previous_checkpoint(out, task, model, cfg)  # checked before the training set is built
    make_batch = _training_batches(options, module, lock if created else None)
    # read now (the file was just read whole): the file may be gone or replaced when the card is written
    data_card = None if data is None else _data_file_card(data, cfg.data, getattr(module, "DATA_CARD", ""))
    if previous is not None:
        step = read_training_state(previous)["step"]
        print(f"{out}: resuming from the checkpoint at step {step} of {steps}", file=sys.stderr, flush=True)
    try:
        summary = run_training(model, make_batch, cfg, out, progress=sys.stderr.isatty())
    except TrainingInterrupted as stop:
        interrupted(f"{stop}; the same command resumes the run")
    except TrainingDiverged as exc:
        error(f"{out}: {exc}")
        raise typer.Exit(1) from None
    except ResumeError as exc:  # a checkpoint whose weights or optimizer state turned out damaged when read whole
        usage_error(f"--out {out}: {exc}")
    except OSError as exc:  # a checkpoint that could not be written (a full disk): the last one is kept
        error(f"{out}: {exc}")
        raise typer.Exit(CANNOT_WRITE) from None
    if previous is not None and summary["steps"] <= summary["resumed_from"]:  # no step ran
        again = " again" if (out / "model" / "config.json").exists() else ""  # not written: stopped in evaluation
        print(f"{out}: the run already ended at step {summary['resumed_from']} (more --steps or a longer "
              f"--time-budget goes on); evaluating and writing {out / 'model'}{again}", file=sys.stderr, flush=True)
    metrics = _evaluate_trained(model, module, out, summary["steps"])
    final = out / "model"
    try:
        _save_trained_model(final, task, model, lambda: _write_model_card(
            final, options, module, cfg, summary, metrics, model, data_card))
    except KeyboardInterrupt:
        interrupted(f"training finished and is checkpointed in {out / 'checkpoint'}, but {out / 'model'} was not "
                    "completely written: the same command evaluates the model and writes it")
    if task == "molecules":  # the acceptance is fitted to a model's own molecules: a new model has none yet
        print(f"note: {final} has no acceptance.safetensors, so free generation from it runs without the "
              "training-likeness acceptance; to fit one (about 17 minutes on 2 cores): python -c \"from "
              f"diffsolve.solvers.molecules import fit_acceptance; fit_acceptance({str(final)!r})\"", file=sys.stderr)
    console.print_json(json.dumps({**summary, **metrics}))


def _initial_model(options: TrainOptions, module) -> DiffusionGemma:
    """A seeded new model of the task, or --init's (grown --deepen times), with what it will ship with."""
    from ..core import new_model, released_config
    from ..core.training import deepen

    model = new_model(module.model_config(), seed=options.seed) if options.init is None else \
        deepen(_warm_start(options.init, options.task, module), options.deepen)
    model.tokenizer = module.TOKENIZER
    model.generation_config = released_config(model, **getattr(module, "SAMPLER", {}))
    return model


def _evaluate_trained(model: DiffusionGemma, module, out: Path, steps: int) -> dict[str, float]:
    """The task's metrics of the trained model on inputs training never used (for its model card)."""
    print(f"{plural(steps, 'step')} done; evaluating the model on inputs training never used (for its model card)",
          file=sys.stderr, flush=True)
    try:
        with working("evaluating"):
            return module.evaluate(model)
    except KeyboardInterrupt:
        interrupted(f"training finished and is checkpointed in {out / 'checkpoint'}, but {out / 'model'} was not "
                    "written: the same command evaluates the model and writes it")


def _training_batches(options: TrainOptions, module, made_lock=None):
    """The task's batch maker, its training set built or read first (exit 2 when that fails; with `made_lock`,
    the lock of a run folder this command made, that folder goes too if still empty: nothing half-made is left)."""
    out, data = options.out, options.data
    try:
        return module.batches(out, options.seed, options.batch_size, options.device, data=data,
                              examples=options.examples, workers=options.workers)
    except (OSError, ValueError, KeyError, KeyboardInterrupt) as exc:
        if made_lock is not None:
            made_lock.release()
            with contextlib.suppress(OSError):
                (out / ".train.lock").unlink()
                out.rmdir()
        if isinstance(exc, KeyboardInterrupt):
            interrupted("stopped while building the training set; nothing was trained or cached")
        if isinstance(exc, FileNotFoundError):  # e.g. the MOSES data wheel is not installed
            error(f"{exc}")
        else:  # numpy: not an .npz, missing or malformed arrays
            error(f"--data {data}: not a {options.task} training set ({exc})" if data is not None
                  else f"--out {out}: cannot build or read the training set there ({exc})")
        raise typer.Exit(2) from None


def _save_trained_model(final: Path, task: str, model: DiffusionGemma, write_card: Callable[[], None]) -> None:
    """The weights, then their card. The card and the acceptance describe the weights they sit beside: they go
    before the new weights come, so a stop in between leaves weights without a card, never a card (or an
    acceptance) of other weights."""
    stale = ["README.md"]
    if task == "molecules":
        from ..tasks.molecule_acceptance import FILE as ACCEPTANCE_FILE

        stale.append(ACCEPTANCE_FILE)
    for name in stale:
        (final / name).unlink(missing_ok=True)
    model.save_pretrained(final)
    write_card()


def _check_train_options(options: TrainOptions) -> None:
    """Refuse options that cannot go together before anything is loaded or made (exit 2)."""
    task, out, data = options.task, options.out, options.data
    if task not in TASKS:
        usage_error(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    check_device_option(options.device)
    if out.exists() and not out.is_dir():
        usage_error(f"--out {out}: not a folder (the run directory holds checkpoints, the log and the model)")
    if (out / "config.json").exists():  # a run's checkpoint/ or model/, or a shipped model: a run would nest in it
        usage_error(f"--out {out}: holds a model (config.json); the run directory is the folder above a run's "
                    "checkpoint/ and model/ (the same --out resumes a run), or a new folder")
    if run := _enclosing_run(out):
        usage_error(f"--out {out}: inside the run {run}, whose checkpoint/ each save replaces whole and whose "
                    "model/ the end of the run rewrites (a run inside would be lost); choose a folder outside them")
    if task not in PREPARED_SETS:
        given = [name for name, value in (("--data", data), ("--examples", options.examples),
                                          ("--workers", options.workers)) if value is not None]
        if given:
            usage_error(f"{', '.join(given)}: only sudoku and molecules train on a prepared set; {task} draws fresh "
                        "instances for every batch")
    if data is not None and not data.is_file():
        usage_error(f"--data {data}: {'a folder, not a file' if data.is_dir() else 'no such file'} (leave --data out "
                    "to build the training set in the run directory)")
    if data is not None and (given := [name for name, value in (("--examples", options.examples),
                                                                ("--workers", options.workers)) if value is not None]):
        usage_error(f"{' and '.join(given)}: these shape a training set built in the run directory; --data {data} is "
                    "one already made")
    if options.deepen > 1 and options.init is None:
        usage_error("--deepen grows the model given by --init; name one")


RUN_MARKS = ("train_log.jsonl", ".train.lock")  # a folder holding one is a run directory, logging or not yet


def _enclosing_run(out: Path) -> Path | None:
    """The run directory whose checkpoint/ or model/ (or a save's checkpoint.tmp/.old) holds `out`, if any."""
    resolved = out.resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name in ("checkpoint", "model", "checkpoint.tmp", "checkpoint.old") and \
                any((folder.parent / mark).exists() for mark in RUN_MARKS):
            return folder.parent
    return None


def _lock_run_dir(out: Path):
    """The run directory made and locked: one process per run directory, until the model is written."""
    from ..core.training import ResumeError, RunLock

    try:
        out.mkdir(parents=True, exist_ok=True)
        return RunLock(out).acquire()
    except OSError as exc:
        usage_error(naming("--out", out, exc))
    except ResumeError as exc:
        usage_error(f"--out {out}: {exc}")


def _previous_checkpoint(out: Path, task: str, model: DiffusionGemma, cfg) -> Path | None:
    """The run's last checkpoint, when it can be resumed with this model and recipe (else exit 2)."""
    from ..core.training import ResumeError, check_resumable, find_checkpoint

    previous = find_checkpoint(out / "checkpoint")
    if previous is None:
        return None
    if (other := _run_task(previous)) not in (None, task):  # None: check_resumable says
        usage_error(f"--out {out}: {previous} continues a run of the {other} task, not {task}; train {task} into a new "
                    "directory")
    try:
        check_resumable(previous, model, cfg)
    except ResumeError as exc:
        hint = " (a run begun with --init/--deepen resumes with the same ones)" if "another model" in str(exc) else ""
        usage_error(f"--out {out}: {exc}{hint}")
    return previous


def _task_modules() -> dict:
    from ..tasks import graph_data, molecules, sorting, sudoku

    return {"sorting": sorting, "sudoku": sudoku, "molecules": molecules, "graphs": graph_data}


def _run_task(checkpoint: Path) -> str | None:
    """The task whose vocabulary a training checkpoint has (None when it is no task's, or it has no tokenizer)."""
    from tokenizers import Tokenizer

    try:
        vocab = Tokenizer.from_file(str(checkpoint / "tokenizer.json")).get_vocab()
    except Exception:  # no tokenizer.json, or not one tokenizers reads
        return None
    return next((name for name, module in _task_modules().items() if module.TOKENIZER.get_vocab() == vocab), None)


def _warm_start(init: Path, task: str, module) -> DiffusionGemma:
    """The model at `init`, refused (exit 2) unless it is a model of this task (its vocabulary and canvas); its
    depth and width may differ from the task's default."""
    try:
        source = load_model(init, dtype=torch.float32)  # trained in float32 whatever the source holds
        check_task_model(source, task, module.TOKENIZER, module.model_config().canvas_length, exact=True)
    except (CheckpointError, OSError) as exc:
        usage_error(naming("--init", init, exc))
    return source


def _data_file_card(data: Path, digest: str, generated: str) -> str:
    """The card's Data section for a run on a `--data` file: this command did not build that set, so the card
    can vouch only for what the file records of how it was made."""
    from ..core.training import made_with_record

    record = made_with_record(data)
    head = f"Read from the file given as `--data` (`{data.name}`, {digest}), which this command did not build. "
    if record is None:
        return head + ("It carries no record of how it was made, so where its examples come from is unknown; the "
                       "task's own generator is not vouched for here.")
    made = ", ".join(f"{k} {v}" for k, v in sorted(record.items()))
    return head + (f"Its record says diffsolve generated it ({made}) as follows, with the record's values for the "
                   f"options named (not this command's); the file itself is not checked against that. {generated}")


def _steps_run(cfg, summary: dict) -> str:
    """The card's step count: the steps asked for, or those a time budget allowed and where its schedule was."""
    from ..core.training import lr_at

    if summary["steps"] >= cfg.steps and cfg.steps < cfg.warmup_steps:  # a short run from --init
        return f"{cfg.steps} steps, all inside the warmup (the last at lr {lr_at(cfg.steps - 1, cfg):.3g})"
    if summary["steps"] >= cfg.steps or not cfg.time_budget_s:
        return f"{cfg.steps} steps"
    last = summary["steps"] - 1
    ended = f"{summary['steps']} of {cfg.steps} steps (the {cfg.time_budget_s:g} s budget ended the run"
    if last < cfg.warmup_steps - 1:
        return ended + f" inside the warmup, at lr {lr_at(last, cfg):.3g}: the peak was never reached)"
    return ended + "; the cosine followed the clock)"


def _extended(plans: list, last_step: int) -> str:
    """What the card must say of a run extended by later calls (more --steps, another --time-budget): its
    command, run fresh, schedules every step at once and so makes other weights; '' for a run of one plan."""
    if len(plans) < 2:
        return ""
    ends = [first for first, _, _ in plans[1:]] + [last_step]
    legs = [(f"step {end}" if end == first + 1 else f"steps {first + 1}-{end}") + f" under --steps {steps}"
            + (f" --time-budget {budget:g}" if budget else "") for (first, steps, budget), end in zip(plans, ends)]
    return (f"The run was extended ({'; '.join(legs)}), so its learning-rate schedule changed along the way: the "
            "command above, run fresh, schedules every step at once and does not reproduce these weights. ")


def _write_model_card(path: Path, options: TrainOptions, module, cfg, summary: dict, metrics: dict, model,
                      data_card: str | None = None) -> None:
    """`data_card`: the Data section of a run on a `--data` file (`_data_file_card`); else the task's own."""
    task, init, deepen = options.task, options.init, options.deepen
    params = sum(p.numel() for p in model.parameters())
    data_card = data_card or getattr(module, "DATA_CARD", f"Generated on the fly by the task module "
                                     f"(`{module.__name__}`); each step's batch is drawn from a seeded generator. "
                                     "No external data.")
    hardware = torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else \
        f"{cpu_name()} CPU, {plural(torch.get_num_threads(), 'thread')}"
    lines = [
        f"# diffsolve {task} model", "",
        f"A {params / 1e6:.2f}M-parameter DiffusionGemma-architecture model (MoE, "
        f"{model.config.num_experts} experts top-{model.config.top_k_experts}) trained by diffsolve "
        + ("from scratch." if init is None else f"from the model at `{init}`"
           + (f", grown {deepen}x deeper (`--deepen`)." if deepen > 1 else ".")),
        "", "## Data", "", data_card, "",
        "## Recipe", "",
        f"DiffusionGemma objective: t ~ U({cfg.eps:g}, 1) per example, canvas tokens replaced by uniform-random "
        "tokens with probability t, cross-entropy over the canvas"
        + (f" + {cfg.ar_weight} x encoder next-token loss" if cfg.ar_weight else " (no encoder next-token loss)")
        + ", self-conditioning "
        f"two-pass with p = {cfg.self_conditioning_prob}. AdamW (betas 0.9/0.95, wd {cfg.weight_decay}), "
        f"lr {cfg.lr} with {cfg.warmup_steps} warmup steps and cosine decay, grad clip {cfg.grad_clip}, "
        f"batch {cfg.batch_size}, {_steps_run(cfg, summary)}, seed {cfg.seed}.", "",
        "## Command", "", "```", options.command(), "```", "", _extended(summary.get("plans", []), summary["steps"])
        + f"Run with {source_description()}.", "",
        "## Hardware and time", "", f"{hardware}; {summary['seconds']:.0f} s of training "
        f"(torch {torch.__version__}).", "",
        "## Metrics", "", "Measured after training on inputs drawn from a seed range training never used:", "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in {**metrics, "final_loss": summary.get("loss", float("nan")),
                                             "final_noised_acc": summary.get("noised_acc", float("nan"))}.items()],
        "",
    ]
    write_atomically(path / "README.md", lambda tmp: tmp.write_text("\n".join(lines), encoding="utf-8"))
