"""The DiffusionGemma training objective (NeMo AutoModel recipe) and a small resumable training loop.

Per example t ~ U(eps, 1); each supervised canvas position is replaced by a uniform-random token with
probability t (there is no mask token). Loss = cross-entropy of the decoder over all supervised canvas
positions + `ar_weight` x the encoder's causal next-token cross-entropy over the clean sequence.
Self-conditioning is trained two-pass: for a random half of the rows a first, detached pass without signal
supplies the logits the second pass is conditioned on.
"""

from __future__ import annotations

import json
import lzma
import math
import os
import shutil
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import arguments
from .checkpoint import CheckpointError, check_device, load_model, save_model
from .files import write_atomically
from .config import ModelConfig
from .ctrl_c import CtrlC
from .model import DiffusionGemma
from .progress import progress_bar


@dataclass
class Batch:
    prompt: Tensor  # [B, P] clean prompt tokens
    target: Tensor  # [B, L] clean canvas tokens (L = canvas_length)
    target_mask: Tensor | None = None  # [B, L] bool: supervised canvas positions (None: all)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.prompt.to(device), self.target.to(device),
                     None if self.target_mask is None else self.target_mask.to(device))


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    self_conditioning_prob: float = 0.5
    ar_weight: float = 1.0
    eps: float = 1e-3
    seed: int = 0
    init: str | None = None  # the weights training began from (the CLI's --init): a resumed run must keep them
    data: str | None = None  # what identifies a training set given as a file (the CLI's --data: its digest)
    checkpoint_every: int = 250
    log_every: int = 25
    device: str = "cpu"
    bf16: bool = False  # autocast to bf16 on CUDA
    compile: bool = False  # torch.compile the encoder and decoder passes (not part of the recipe)
    # Wall-clock budget: after warmup the cosine follows whichever is further along, the steps or the time since
    # warmup ended against the budget left then, and training ends when either runs out (for time-boxed
    # machines; step-exact resumption needs it unset).
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        """A bad value fails here, not as a ZeroDivisionError after the first step; numpy's numbers are kept as
        Python's (the checkpoint records the config as JSON)."""
        checks = {name: lambda v, n: arguments.whole(v, n, 1) for name in
                  ("steps", "batch_size", "checkpoint_every", "log_every")}
        checks.update(warmup_steps=lambda v, n: arguments.whole(v, n, 0), seed=arguments.seed,
                      lr=arguments.positive, weight_decay=lambda v, n: arguments.number(v, n, 0),
                      ar_weight=lambda v, n: arguments.number(v, n, 0),
                      grad_clip=lambda v, n: arguments.number(v, n, 0, above_low=True, infinite=True),  # inf: no clip
                      min_lr_ratio=lambda v, n: arguments.number(v, n, 0, 1),
                      self_conditioning_prob=lambda v, n: arguments.number(v, n, 0, 1),
                      eps=lambda v, n: arguments.number(v, n, 0, 1, above_low=True),
                      time_budget_s=lambda v, n: None if v is None else arguments.positive(v, n),
                      device=lambda v, n: str(v))  # a torch.device as its name: the state file records it as text
        for name, check in checks.items():
            setattr(self, name, check(getattr(self, name), name))


def diffusion_loss(model: DiffusionGemma, batch: Batch, generator: torch.Generator, *,
                   self_conditioning_prob: float = 0.5, ar_weight: float = 1.0,
                   eps: float = 1e-3) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch and its parts (for logging)."""
    prompt, target = batch.prompt, batch.target
    b, length = target.shape
    device = target.device
    supervised = torch.ones_like(target, dtype=torch.bool) if batch.target_mask is None else batch.target_mask

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=device)

    t = eps + (1 - eps) * rand(b)
    corrupt = (rand(b, length) < t[:, None]) & supervised
    noise = torch.randint(0, model.config.vocab_size, (b, length), generator=generator, device=device)
    noisy = torch.where(corrupt, noise, target)

    if ar_weight > 0:
        # One causal pass over the clean sequence gives both the AR loss and the prompt cache for the decoder.
        sequence = torch.cat((prompt, target), dim=1)
        full_cache, ar_logits = model.encode_logits(sequence, keep_full=True)
        ar_targets = sequence[:, 1:].masked_fill(~torch.cat((torch.ones_like(prompt[:, 1:], dtype=torch.bool),
                                                             supervised), dim=1), -100)
        ar_loss = F.cross_entropy(ar_logits[:, :-1].flatten(0, 1), ar_targets.flatten(), ignore_index=-100)
        cache = full_cache.truncate(prompt.shape[1], model.window, model.config.layers)
    else:  # diffusion only: the encoder sees just the prompt (about a third less compute per example)
        cache = model.encode(prompt)
        ar_loss = torch.zeros((), device=device)

    sc_rows = rand(b) < self_conditioning_prob
    sc_logits = None
    if bool(sc_rows.any()):
        with torch.no_grad():
            sc_logits = model.denoise(noisy, cache).detach()
    logits = model.denoise(noisy, cache, sc_logits, sc_rows if sc_logits is not None else None)
    labels = target.masked_fill(~supervised, -100)
    canvas_loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    with torch.no_grad():
        predicted = logits.argmax(-1)
        noised_acc = ((predicted == target) & corrupt).sum() / corrupt.sum().clamp(min=1)
    loss = canvas_loss + ar_weight * ar_loss
    return loss, {"loss": loss.item(), "canvas_loss": canvas_loss.item(), "ar_loss": ar_loss.item(),
                  "noised_acc": noised_acc.item()}


def lr_at(step: int, cfg: TrainConfig, elapsed_s: float = 0.0, warmup_end_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio * lr` (over steps, or time when budgeted).
    `warmup_end_s`: the elapsed time when warmup ended; the clock's progress counts from there, so that a warmup
    slowed by compiling does not make the rate step down when it ends."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.time_budget_s:
        left = cfg.time_budget_s - warmup_end_s
        progress = max(progress, (elapsed_s - warmup_end_s) / left if left > 0 else 1.0)
    progress = min(1.0, progress)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_generators(seed: int, step: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(data, noise) generators of one training step, from the run's seed and the step alone (so a resumed run
    draws what an unbroken one would). Separate streams: with one seed for both, a CPU run drew the same numbers
    for the batch and its noise (which examples showed a condition matched which canvas positions were noised)."""
    step_seed = (seed * 1_000_003 + step) % 2**64  # what manual_seed takes (the same number below 2**64)
    return (torch.Generator().manual_seed(step_seed),
            torch.Generator(device=device).manual_seed(step_seed ^ 0x9E3779B97F4A7C15))


def make_optimizer(model: DiffusionGemma, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=cfg.device.startswith("cuda"))


# ------------------------------------------------------------------------------------------ state files
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def read_training_state(checkpoint: Path) -> dict:
    """A checkpoint's training_state.json: its step, its TrainConfig as a dict, and what the run recorded."""
    return json.loads((checkpoint / STATE_JSON).read_text(encoding="utf-8"))


def save_training_state(directory: Path, model: DiffusionGemma, optimizer: torch.optim.Optimizer, step: int,
                        cfg: TrainConfig, extra: dict | None = None) -> None:
    """Model (HF layout) + optimizer moments as safetensors + step/config as JSON, written atomically. A write that
    fails (a full disk) raises OSError naming the checkpoint, leaves nothing half-written and the previous
    checkpoint as it was."""
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of an interrupted save
    try:
        tmp.mkdir(parents=True)
        save_model(model, tmp)
        tensors = {}
        for i, p in enumerate(model.parameters()):
            state = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq", "step"):
                if key in state:
                    tensors[f"{i}.{key}"] = torch.as_tensor(state[key]).detach().cpu().contiguous()
        write_atomically(tmp / STATE_TENSORS, lambda path: save_file(tensors, str(path)))  # the usual file mode too
        (tmp / STATE_JSON).write_text(json.dumps({"step": step, "config": asdict(cfg), **(extra or {})}, indent=2))
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)  # until the next line completes, `old` is the checkpoint (find_checkpoint)
        os.replace(tmp, directory)
    except Exception as exc:  # any failure to write: safetensors' and tokenizers' own errors are no OSErrors
        shutil.rmtree(tmp, ignore_errors=True)
        kept = find_checkpoint(directory)
        problem = f"{exc}" if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise OSError(f"cannot write the checkpoint of step {step} to {directory} ({problem}); "
                      + (f"the checkpoint in {kept} is intact" if kept is not None else "no checkpoint was kept")
                      ) from None
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at `directory`, or the previous one if a save was interrupted mid-swap."""
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / STATE_JSON).is_file():
            return candidate
    return None


def load_training_state(directory: Path, model: DiffusionGemma, optimizer: torch.optim.Optimizer) -> dict:
    """Restore optimizer moments saved by `save_training_state`; returns the saved state (`step` to continue from,
    the clock). Moments that do not fit the model's weights, or hold inf or NaN, are a damaged checkpoint
    (ResumeError). The weights are the caller's to load."""
    tensors = load_file(str(directory / STATE_TENSORS))
    for i, p in enumerate(model.parameters()):
        if f"{i}.exp_avg" in tensors:
            state = {key: tensors[f"{i}.{key}"] for key in ("exp_avg", "exp_avg_sq", "step") if f"{i}.{key}" in tensors}
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state.get(key)
                if moment is None or moment.shape != p.shape or not torch.isfinite(moment).all():
                    problem = "is missing" if moment is None else (
                        f"has shape {list(moment.shape)}, not the weight's {list(p.shape)}"
                        if moment.shape != p.shape else "holds inf or NaN")
                    raise ResumeError(f"{directory / STATE_TENSORS}: {i}.{key} {problem}, the checkpoint is "
                                      "damaged; delete it to start the run over")
            # copies: load_file's tensors map the file, which the next save replaces (Windows refuses that)
            optimizer.state[p] = {key: value.to(p.device, copy=True) for key, value in state.items()}
    return read_training_state(directory)


class ResumeError(ValueError):
    """The run directory holds a checkpoint of another model or another recipe."""


# What a resumed run must keep; steps and the time budget may change (to extend a run), and with them warmup.
RECIPE_FIELDS = ("batch_size", "lr", "min_lr_ratio", "weight_decay", "grad_clip", "self_conditioning_prob",
                 "ar_weight", "eps", "seed", "init", "data")


MADE_WITH = "made_with:"  # the prefix of a cached training set's record of how it was made


def cached_training_set(path: Path, build: Callable[[], dict[str, np.ndarray]], made_with: dict[str, int],
                        layout: dict[str, tuple[int, ...]], check: bool = True) -> dict[str, np.ndarray]:
    """The arrays cached at `path` (.npz), or `build()`'s, written there atomically with `made_with` (such as
    the number of examples and the seed). `layout` names the arrays a set holds and each one's shape after its
    first (examples) dimension, which all share. With `check`, a cache made with other values is refused
    (ValueError): reusing it would train on a set other than the one the command and the model card name."""
    if path.is_file():
        names = _check_layout(path, layout)
        try:
            with np.load(path) as stored:
                arrays = {k: stored[k] for k in names}
        except UNREADABLE:  # numpy's own texts suggest unpickling it
            raise _unreadable(path, layout) from None
        except MemoryError:
            raise ValueError(f"{path}: its arrays do not fit in memory here") from None
        made = _made_with({k: arrays.pop(k) for k in list(arrays) if k.startswith(MADE_WITH)}, path)
        if not len(next(iter(arrays.values()))):
            raise ValueError(f"{path}: holds no examples")
        if nonfinite := [k for k, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]:
            raise ValueError(f"{path}: {', '.join(nonfinite)} holds NaN or infinite values (a property RDKit "
                             "could not compute?): drop those examples")
        differ = [f"{k} {made[k]}, not {made_with[k]}" for k in made if k in made_with and made[k] != made_with[k]]
        if check and differ:
            raise ValueError(f"{path} holds a training set made with other settings ({'; '.join(differ)}): train "
                             "into a new directory, or delete the file to rebuild it")
        return arrays
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {MADE_WITH + k: np.int64(v) for k, v in made_with.items()}

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: numpy adds no '.npz' to the temporary name
            np.savez_compressed(f, **arrays, **record)

    write_atomically(path, save)
    return arrays


def _check_layout(path: Path, layout: dict[str, tuple[int, ...]]) -> list[str]:
    """The names of the arrays to read (`layout`'s and the 'made_with:' record's); refuses a set whose headers do
    not match `layout` before any array is read: a small compressed file can declare gigabytes, and numpy would
    fill them before a shape could be compared. Other members (notes, other arrays) are left unread."""
    try:
        headers, names = _npz_headers(path, lambda name: name in layout or name.startswith(MADE_WITH))
    except UNREADABLE:
        raise _unreadable(path, layout) from None
    doubled = sorted({name for name in headers if names.count(name) > 1})
    if doubled:  # as 'x' and 'x.npy': one header would be checked and numpy might read the other
        raise ValueError(f"{path}: holds {', '.join(doubled)} twice")
    missing = [name for name in layout if name not in headers]
    if missing:
        held = sorted(name for name in names if not name.startswith(MADE_WITH))
        raise ValueError(f"{path}: holds {', '.join(held) or 'no arrays'}; a training set needs {', '.join(layout)}")
    shapes = {name: headers[name][0] for name in layout}
    wrong = any(len(shape) != 1 + len(layout[name]) or shape[1:] != layout[name] for name, shape in shapes.items())
    if wrong or len({shape[0] for shape in shapes.values()}) > 1:
        expected = ", ".join(f"{name} [{', '.join(['N', *map(str, layout[name])])}]" for name in layout)
        raise ValueError(f"{path}: arrays shaped {', '.join(f'{n} {list(s)}' for n, s in shapes.items())}; "
                         f"expected {expected} with one N")
    odd = [f"{name} ({dtype})" for name, (_, dtype, _) in headers.items() if dtype.kind not in "biuf"]
    if odd:
        raise ValueError(f"{path}: arrays of numbers expected, not {', '.join(odd)}")
    if any(shape != () for name, (shape, _, _) in headers.items() if name.startswith(MADE_WITH)):
        raise ValueError(f"{path}: its '{MADE_WITH}' record holds something other than single whole numbers")
    short = [name for name, (shape, dtype, stored) in headers.items() if math.prod(shape) * dtype.itemsize > stored]
    if short:
        raise ValueError(f"{path}: {', '.join(short)}: the header declares more data than the archive holds (cut "
                         "short or damaged)")
    return list(headers)


UNREADABLE = (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)  # damaged archives
READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _unreadable(path: Path, layout: dict[str, tuple[int, ...]]) -> ValueError:
    wanted = ", ".join(f"{name} [{', '.join(['N', *map(str, shape)])}]" for name, shape in layout.items())
    return ValueError(f"{path}: not a readable .npz archive of arrays (damaged, cut short, encrypted, or another "
                      f"format); a training set is numpy.savez's archive of {wanted}")


def _npz_headers(path: Path, wanted: Callable[[str], bool]
                 ) -> tuple[dict[str, tuple[tuple[int, ...], np.dtype, int]], list[str]]:
    """The shape, dtype and stored size in bytes of each `wanted` array of an .npz, from its header alone, and
    the names of all its members (as numpy names them: without '.npy'). Raises ValueError for a wanted member
    that is encrypted or compressed in a way zipfile cannot read."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        names = [member.filename.removesuffix(".npy") for member in members]
        for member, name in zip(members, names):
            if not wanted(name):
                continue
            if member.flag_bits & 1 or member.compress_type not in READABLE_METHODS:  # (zipfile: RuntimeError)
                raise ValueError(f"{name}: encrypted, or compressed in a way zipfile cannot read")
            with archive.open(member) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            headers[name] = (shape, dtype, member.file_size)
    return headers, names


def made_with_record(path: Path) -> dict[str, int] | None:
    """The record `cached_training_set` stored in a training set file (None when it has none)."""
    with np.load(path) as stored:
        record = _made_with({k: stored[k] for k in stored.files if k.startswith(MADE_WITH)}, path)
    return record or None


def _made_with(entries: dict[str, np.ndarray], path: Path) -> dict[str, int]:
    """{'examples': 60000, ...} from the stored 'made_with:' arrays, each a single whole number."""
    if any(a.shape != () or not np.issubdtype(a.dtype, np.integer) for a in entries.values()):
        raise ValueError(f"{path}: its 'made_with:' record holds something other than single whole numbers")
    return {k[len(MADE_WITH):]: int(a) for k, a in entries.items()}


def check_resumable(checkpoint: Path, model: DiffusionGemma, cfg: TrainConfig) -> None:
    """Refuse to continue a checkpoint that is damaged, or of another architecture or recipe: the result would
    match neither run nor the recipe its model card records."""
    _check_intact(checkpoint)
    theirs = ModelConfig.from_hf_dict(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")))
    differ = [f.name for f in fields(ModelConfig)
              if f.name != "passthrough" and getattr(theirs, f.name) != getattr(model.config, f.name)]
    if differ:
        raise ResumeError(f"{checkpoint} holds another model ({', '.join(differ)} differ); train into a new "
                          "directory")
    state = read_training_state(checkpoint)
    if state["step"] > cfg.steps:  # its weights are past the schedule the card would give
        raise ResumeError(f"{checkpoint} holds a run at step {state['step']}, past steps={cfg.steps}; continue it "
                          f"with at least {state['step']} steps, or train into a new directory")
    saved = state["config"]
    changed = [f"{name} {saved[name]} -> {getattr(cfg, name)}" for name in RECIPE_FIELDS
               if name in saved and saved[name] != getattr(cfg, name)]
    if changed:
        raise ResumeError(f"{checkpoint} continues a run with another recipe ({', '.join(changed)}); "
                          "resume it with the same values, or train into a new directory")


def _check_intact(checkpoint: Path) -> None:
    """ResumeError unless the checkpoint's JSON files parse and its safetensors files open (a truncated file
    does not): found before the run directory's training set is built, not as a traceback when it resumes."""
    try:
        state = read_training_state(checkpoint)
        int(state["step"]), dict(state["config"])
        ModelConfig.from_hf_dict(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")))
        weights = sorted(checkpoint.glob("model*.safetensors"))  # one file, or shards
        if not weights:
            raise ValueError("no model*.safetensors")
        for path in [*weights, checkpoint / STATE_TENSORS]:
            with safe_open(str(path), framework="pt"):
                pass
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ResumeError(f"{checkpoint} is damaged ({type(exc).__name__}: {exc}); delete it to start the run "
                          "over") from None


def deepen(model: DiffusionGemma, factor: int) -> DiffusionGemma:
    """A model `factor` times deeper that computes exactly what `model` computes: each layer is followed by
    `factor - 1` copies of itself whose output norms (after attention, after the feed-forward) are zero and
    whose layer scalars are one, so each copy starts as the identity and training grows it from a trained
    layer's weights (progressive stacking). Layer kinds and per-layer geometry repeat with their layers."""
    if factor < 1:
        raise ValueError(f"deepen: factor must be at least 1, got {factor}")
    cfg = model.config
    layers = [i for i in range(cfg.num_layers) for _ in range(factor)]
    deeper = DiffusionGemma(replace(
        cfg, num_layers=len(layers), layer_types=[cfg.layer_types[i] for i in layers],
        per_layer_overrides={j: cfg.per_layer_overrides[i] for j, i in enumerate(layers)
                             if i in cfg.per_layer_overrides}))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layers.")}
    silenced = {"post_attention_layernorm.weight": 0.0, "post_feedforward_layernorm.weight": 0.0,
                "encoder_scalar": 1.0, "decoder_scalar": 1.0}  # a copy's branches add zero and it scales by one
    for j, i in enumerate(layers):
        for name, value in model.layers[i].state_dict().items():
            is_copy = j % factor > 0 and name in silenced
            state[f"layers.{j}.{name}"] = torch.full_like(value, silenced[name]) if is_copy else value.clone()
    deeper.load_state_dict(state)
    deeper.tokenizer = getattr(model, "tokenizer", None)
    deeper.generation_config = getattr(model, "generation_config", None)
    return deeper.to(model.device, model.dtype).eval()


# ------------------------------------------------------------------------------------------ loop
def train_step(model: DiffusionGemma, optimizer: torch.optim.Optimizer, batch: Batch, generator: torch.Generator,
               cfg: TrainConfig, mark: Callable[[], None] = lambda: None) -> dict[str, float]:
    """One optimizer step: the loss (bf16 autocast when `cfg.bf16`), backward, gradient clipping, AdamW. Returns
    the loss parts, the gradient norm and `skipped` (1.0 when the gradient held inf or NaN: the weights and the
    optimizer's moments are then left as they were). `mark()` runs after the loss and after backward."""
    with torch.autocast(device_type=batch.target.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        loss, parts = diffusion_loss(model, batch, generator, self_conditioning_prob=cfg.self_conditioning_prob,
                                     ar_weight=cfg.ar_weight, eps=cfg.eps)
    mark()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    mark()
    parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
    parts["skipped"] = float(not math.isfinite(parts["grad_norm"]))
    if not parts["skipped"]:  # one NaN update would poison every weight, and then the next checkpoint
        optimizer.step()
    return parts


MAX_SKIPPED_IN_A_ROW = 8


class TrainingDiverged(RuntimeError):
    """The gradient held inf or NaN for MAX_SKIPPED_IN_A_ROW steps in a row; the last checkpoint is untouched."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped `train` after a completed step, which was checkpointed: calling again resumes there."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped after step {step}, checkpointed in {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


def train(model: DiffusionGemma, make_batch: Callable[[int, torch.Generator], Batch], cfg: TrainConfig,
          out_dir: str | os.PathLike, *, evaluate: Callable[[DiffusionGemma], dict] | None = None,
          progress: bool = True, stop_after: int | None = None) -> dict:
    """Train `model` in place; checkpoints to `out_dir/checkpoint` every `checkpoint_every` steps and resumes
    from it when present. `make_batch(step, generator)` must be deterministic in its arguments.

    `stop_after` ends this call after that many steps (checkpointed), e.g. to fit a time budget; calling again
    continues the same schedule. Returns a summary: steps, seconds, last logged metrics, and `plans` (see `_plans`:
    more than one when calls with more steps or another time budget extended the run). A JSON line per log
    interval goes to `out_dir/train_log.jsonl`. A second process training in the same `out_dir` at the same
    time is refused (ResumeError): the two would overwrite each other's checkpoints."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        was_compiled = model.is_compiled
        try:
            return _train(model, make_batch, cfg, out, evaluate, progress, stop_after)
        finally:  # also when a step fails or training stops: sampling next would recompile every graph
            if cfg.compile and not was_compiled:
                model.drop_compiled()
            model.eval()


class RunLock:
    """One training run per run directory: an advisory lock on `out/.train.lock`, released when the process
    ends however it ends. Re-entrant within a thread (the CLI holds it around `train`, which takes it too).
    `acquire` raises ResumeError while another process, or another thread of this one, holds it. No-op where
    there are no file locks (Windows)."""

    _held: dict[Path, int] = {}  # run directories this process holds: the thread that holds each
    _guard = threading.Lock()

    def __init__(self, out: str | os.PathLike):
        self.out, self.handle = Path(out).resolve(), None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        with RunLock._guard:
            holder = RunLock._held.get(self.out)
            if holder == threading.get_ident():
                return self
            if holder is not None:
                raise ResumeError(f"{self.out}: another thread of this process is training in this directory")
            handle = open(self.out / ".train.lock", "w", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise ResumeError(f"{self.out}: another training process is running in this directory") from None
            self.handle = handle
            RunLock._held[self.out] = threading.get_ident()
        return self

    def release(self) -> None:
        with RunLock._guard:
            if self.handle is not None:
                self.handle.close()  # closing drops the lock
                self.handle = None
                RunLock._held.pop(self.out, None)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class _Interval:
    """Running sums of a log interval's step results; a skipped step (inf or NaN gradient) counts only as skipped,
    since its loss and norm would spoil the interval's means."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = self.kept = 0

    def add(self, parts: dict[str, float]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v if k == "skipped" or not parts["skipped"] else 0.0)
        self.steps += 1
        self.kept += not parts["skipped"]

    def means(self) -> dict[str, float]:
        return {k: v / self.steps if k == "skipped" else v / self.kept if self.kept else math.nan
                for k, v in self.sums.items()}


def _resumed(found: Path, optimizer: torch.optim.Optimizer,
             model: DiffusionGemma) -> tuple[int, float, float | None, list]:
    """(the step to go on from, seconds already trained, seconds into the run at which warmup ended, its plans)
    of a checkpoint whose weights the model holds; the optimizer's state is loaded from it."""
    state = load_training_state(found, model, optimizer)
    step, config = int(state["step"]), state["config"]
    # written before plans were kept: the last call's is the best known for every step before this one
    plans = state.get("plans", [[0, config.get("steps"), config.get("time_budget_s")]] if step else [])
    # None: saved inside warmup; no key: saved before warmup_end_s was kept, a clock from the start, as it ran
    return step, state.get("elapsed_s", 0.0), state.get("warmup_end_s", 0.0), plans


def _plans(earlier: list[list], start: int, cfg: TrainConfig) -> list[list]:
    """[first step, steps, time budget] of each call that scheduled the run anew and ran a step: an extended run
    (more --steps, another --time-budget) scheduled its steps before `start` for another end than the command
    now names."""
    plan = [start, cfg.steps, cfg.time_budget_s]
    return earlier if earlier and earlier[-1][1:] == plan[1:] else [*earlier, plan]


def _diverged(ckpt: Path, step: int, skipped_in_a_row: int) -> TrainingDiverged:
    last = find_checkpoint(ckpt)
    left = (f"the checkpoint at step {read_training_state(last)['step']} is kept"
            if last is not None else "no checkpoint was written")
    return TrainingDiverged(f"the gradient held inf or NaN at steps {step + 2 - skipped_in_a_row}-{step + 1}, so "
                            f"training stopped ({left}); a lower learning rate may help (in a new run directory: a "
                            "run resumes only with its own recipe)")


def _last_logged(log_path: Path) -> dict:
    """The last complete line of a training log (a finished run run again reports it), or {}."""
    if not log_path.is_file():
        return {}
    logged = _log_records(log_path.read_text(errors="replace").splitlines())
    return logged[-1][1] if logged else {}


def _checkpoint_before_raising(checkpoint: Callable[[], None], exc: BaseException) -> None:
    """Save the finished step before `exc` ends the run; a save that fails too is noted on `exc`, which stays the
    error the caller sees."""
    try:
        checkpoint()
    except OSError as failed:
        exc.add_note(f"and the checkpoint could not be saved: {failed}")


def _trim_log(log_path: Path, step: int) -> None:
    """Drop the log lines of steps after `step`, the checkpoint a run resumes from (a run killed between
    checkpoints logged steps it will run again), and any cut-off line."""
    if not log_path.is_file():
        return
    lines = log_path.read_text(errors="replace").splitlines()
    kept = [line for line, record in _log_records(lines) if record["step"] <= step]
    if kept != lines:
        text = "".join(line + "\n" for line in kept)
        write_atomically(log_path, lambda path: path.write_text(text, encoding="utf-8"))


def _log_records(lines: list[str]) -> list[tuple[str, dict]]:
    """(line, record) of a training log's complete lines: JSON objects with a whole-number step (a line cut off
    or garbled by a crash is left out)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append((line, record))
    return records


def _load_resumed_weights(found: Path, model: DiffusionGemma, cfg: TrainConfig, device: torch.device) -> None:
    """The weights of the checkpoint at `found`, once it is known to be this run's (ResumeError otherwise)."""
    check_resumable(found, model, cfg)
    try:
        model.load_state_dict(load_model(found, device=device).state_dict())
    except CheckpointError as exc:  # weights that hold inf or NaN, say: the headers were intact
        raise ResumeError(f"{exc}; delete {found} to start the run over") from None


def _log(log_path: Path, metrics: dict, progress: bool, checkpoint: Callable[[], None]) -> None:
    """One line of metrics to the run's log, and to stderr unless a progress bar shows them."""
    try:
        with log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        if not progress:
            print(json.dumps(metrics), file=sys.stderr, flush=True)  # stdout keeps the summary alone
    except (OSError, SystemExit) as exc:  # the log's reader went away (`2>&1 | head`: the CLI ends): keep the step
        _checkpoint_before_raising(checkpoint, exc)
        raise


def _train(model: DiffusionGemma, make_batch: Callable[[int, torch.Generator], Batch], cfg: TrainConfig,
           out: Path, evaluate: Callable[[DiffusionGemma], dict] | None, progress: bool,
           stop_after: int | None) -> dict:
    ckpt = out / "checkpoint"
    device = check_device(cfg.device)
    found = find_checkpoint(ckpt)
    if found is not None:
        _load_resumed_weights(found, model, cfg, device)
    model.to(device).train()
    if cfg.compile:  # for training only: sampling afterwards (new shapes, no grad) would recompile every graph
        model.compile_encoder()
        model.compile_denoiser()
    optimizer = make_optimizer(model, cfg)
    start, previous_s, warmup_end_s, plans = _resumed(found, optimizer, model) if found is not None \
        else (0, 0.0, None, [])
    began = time.time()

    def elapsed() -> float:  # seconds of training, earlier calls included
        return previous_s + time.time() - began

    log_path = out / "train_log.jsonl"
    _trim_log(log_path, start)
    metrics: dict[str, float] = {}
    interval = _Interval()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    if cfg.time_budget_s is not None and previous_s >= cfg.time_budget_s:
        end = start  # the budget was spent by an earlier call
    plans = _plans(plans, start, cfg) if end > start else plans  # a call that runs no step schedules none
    bar = progress_bar(progress, cfg.steps, "train", "step", initial=start, iterable=range(start, end),
                       mininterval=2.0)
    done = start
    skipped_in_a_row = 0

    def checkpoint() -> None:  # of the step `done`; warmup_end_s: None until warmup ends
        save_training_state(ckpt, model, optimizer, done, cfg,
                            {"elapsed_s": round(elapsed(), 1), "warmup_end_s": warmup_end_s, "plans": plans})

    # an optimizer update cut short would checkpoint half-updated weights: Ctrl-C stops after the step
    with CtrlC(notice="stopping after this step (with a checkpoint)") as stop:
        for step in bar:
            data, generator = step_generators(cfg.seed, step, device)
            batch = make_batch(step, data).to(device)
            now = elapsed()
            if step >= cfg.warmup_steps and warmup_end_s is None:
                warmup_end_s = now
            lr = lr_at(step, cfg, now, warmup_end_s or 0.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                parts = train_step(model, optimizer, batch, generator, cfg)
            except Exception as exc:  # Ctrl-C reaches torch.compile's workers too: a kernel cut short fails to load
                if not stop.asked:
                    raise
                stopped = TrainingInterrupted(done, ckpt)  # compiling fails before the update: weights of step `done`
                stopped.add_note(f"the step under way failed as it stopped: {type(exc).__name__}: {exc}")
                _checkpoint_before_raising(checkpoint, stopped)
                raise stopped from None
            skipped_in_a_row = skipped_in_a_row + 1 if parts["skipped"] else 0
            if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise _diverged(ckpt, step, skipped_in_a_row)
            interval.add(parts)
            done = step + 1
            out_of_time = cfg.time_budget_s is not None and elapsed() >= cfg.time_budget_s
            if out_of_time:
                end = done
            if done % cfg.log_every == 0 or done in (cfg.steps, end) or stop.asked:  # an interrupt logs its steps
                metrics, interval = interval.means(), _Interval()
                metrics.update(step=done, lr=lr, elapsed_s=round(elapsed(), 1))
                if evaluate is not None and done % cfg.checkpoint_every == 0:
                    model.eval()
                    metrics.update(evaluate(model))
                    model.train()
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['noised_acc']:.3f}")
                _log(log_path, metrics, progress, checkpoint)
            if done % cfg.checkpoint_every == 0 or done in (cfg.steps, end) or stop.asked:  # asked while logging too
                checkpoint()
            if out_of_time or stop.asked:
                break
    metrics = metrics or _last_logged(log_path)  # no step ran (a finished run again): its last logged metrics
    if stop.asked:  # even after the last step: what follows (the CLI's evaluation) may take minutes
        raise TrainingInterrupted(done, ckpt)
    return {"steps": end, "resumed_from": start, "seconds": round(elapsed(), 1), "plans": plans, **metrics}
