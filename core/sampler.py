"""Block-diffusion sampling with constraint hooks, and the autoregressive baseline on the same weights.

Semantics follow transformers 5.23.0 `DiffusionGemmaGenerationMixin.generate` with its `EntropyBoundSampler`:
a uniform-random canvas; each pass the decoder's logits are temperature-scaled (linear schedule t_max -> t_min),
a token is sampled per position, the lowest-entropy positions whose summed entropy (minus the largest) stays
under the bound are accepted, every other position is re-noised uniformly; rows stop when their argmax canvas
is stable and confident; the argmax canvas is the output; canvases are committed block by block.
With the same seed and `generator=None` the random draws happen in the same order as in transformers.

Constraints steer every pass through `Guidance` hooks (core/guidance.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral

import torch
from torch import Tensor

from . import arguments
from .guidance import Guidance
from .model import DiffusionGemma, KVCache, check_token_ids


# ------------------------------------------------------------------------------------------ config
RELEASED_NEW_TOKENS = 256  # transformers' default length when neither the call nor the checkpoint sets one


@dataclass
class SamplingConfig:
    """The released `generation_config.json` defaults."""

    max_denoising_steps: int = 48
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int | None = 1  # None disables adaptive stopping
    confidence_threshold: float | None = 0.005
    max_new_tokens: int | None = None  # None: RELEASED_NEW_TOKENS, as transformers (diffsolve saves set one canvas)
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # Not in transformers: accepted tokens stay on the canvas (and count as accepted) until a constraint
    # re-noises them, instead of being re-decided every pass. Off by default; never written to generation_config.
    keep_accepted: bool = False
    # Not in transformers: finished rows leave the batch, so later passes cost only the rows still running
    # (changes which random draws each row gets). Off by default; never written to generation_config.
    drop_finished: bool = False
    # Not in transformers: denoise canvases of this many tokens instead of the model's `canvas_length` (a model
    # trained on shorter canvases for some problems). None: the model's. Never written to generation_config.
    canvas_length: int | None = None

    def __post_init__(self) -> None:
        # At least the checks transformers' DiffusionGemmaGenerationConfig makes (a few are stricter: no 2.0 for a
        # count, no True for a threshold), except that t_max == t_min, a constant temperature, is allowed here.
        with arguments.raised_as(ValueError):  # ValueError throughout, as transformers raises
            arguments.positive(self.entropy_bound, "entropy_bound")
            arguments.number(self.t_min, "t_min", 0)
            arguments.positive(self.t_max, "t_max")
            if self.confidence_threshold is not None:
                arguments.positive(self.confidence_threshold, "confidence_threshold")
            arguments.steps(self.max_denoising_steps, "max_denoising_steps")
            for name, least in (("stability_threshold", 0), ("max_new_tokens", 1), ("canvas_length", 1)):
                if getattr(self, name) is not None:
                    arguments.whole(getattr(self, name), name, least)
            if self.stability_threshold is not None and self.stability_threshold > arguments.MAX_STEPS:
                raise ValueError(f"stability_threshold counts passes: it must be below 2**31, got "
                                 f"{self.stability_threshold}")
            arguments.flag(self.keep_accepted, "keep_accepted")
            arguments.flag(self.drop_finished, "drop_finished")
        if not self.t_min <= self.t_max:  # the last pass samples above t_min
            raise ValueError(f"need 0 <= t_min <= t_max and t_max > 0, got t_min={self.t_min}, t_max={self.t_max}")
        for name, ids in (("eos_token_id", self.eos_ids), ("pad_token_id", [self.pad_token_id])):
            token_ids = len(ids) > 0 and all(isinstance(i, Integral) and not isinstance(i, bool) and 0 <= i < 2**63
                                             for i in ids)
            if getattr(self, name) is not None and not token_ids:
                raise ValueError(f"{name} must be a token id{' or a list of them' if name == 'eos_token_id' else ''}"
                                 f", got {getattr(self, name)!r}")

    @property
    def eos_ids(self) -> list:
        """`eos_token_id` as a list (empty for None)."""
        eos = self.eos_token_id
        return list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]

    def check_vocabulary(self, vocab_size: int) -> None:
        """ValueError for an EOS or pad id outside a model's vocabulary (one could never be sampled or padded with)."""
        for name, ids in (("eos_token_id", self.eos_ids), ("pad_token_id", [self.pad_token_id])):
            outside = [i for i in ids if i is not None and i >= vocab_size]
            if outside:
                raise ValueError(f"{name} {outside[0]} is outside the vocabulary of {vocab_size} tokens")

    @property
    def adaptive_stopping(self) -> bool:
        return self.stability_threshold is not None and self.confidence_threshold is not None

    def temperature(self, remaining: int) -> Tensor:
        """`remaining` counts down N..1. Computed in fp32 exactly as transformers does, so samples match."""
        fraction = torch.tensor(remaining, dtype=torch.int32) / self.max_denoising_steps
        return self.t_min + (self.t_max - self.t_min) * fraction

    @classmethod
    def from_hf_dict(cls, d: dict) -> "SamplingConfig":
        sampler = d.get("sampler_config") or {}
        kwargs = {k: d[k] for k in ("max_denoising_steps", "t_min", "t_max", "stability_threshold",
                                    "confidence_threshold", "max_new_tokens", "eos_token_id", "pad_token_id")
                  if d.get(k) is not None}
        if "entropy_bound" in sampler:
            kwargs["entropy_bound"] = sampler["entropy_bound"]
        for name in ("entropy_bound", "confidence_threshold"):  # JSON floats, as transformers requires
            if name in kwargs and not isinstance(kwargs[name], float):
                raise ValueError(f"{name} must be written as a float (e.g. 1.0), got {kwargs[name]!r}")
        config = cls(**kwargs)
        if config.t_max == config.t_min:
            raise ValueError(f"t_max must be greater than t_min, got {config.t_max!r} for both (transformers refuses a "
                             "constant temperature in generation_config.json; in code SamplingConfig allows one)")
        return config

    def to_hf_dict(self) -> dict:
        """generation_config.json's fields. Floats are written as floats (transformers refuses `"t_min": 0`).
        Raises ValueError for settings the file cannot hold: a constant temperature (transformers refuses
        t_max == t_min) and no adaptive stopping (a threshold of None: left out, it would read back as the
        default)."""
        if self.t_max == self.t_min:
            raise ValueError(f"a constant temperature ({self.t_max!r}) cannot be written to generation_config.json: "
                             "transformers refuses t_max == t_min there")
        for name, default in (("stability_threshold", 1), ("confidence_threshold", 0.005)):
            if getattr(self, name) is None:
                raise ValueError(f"{name}=None (no adaptive stopping) cannot be written to generation_config.json: "
                                 f"it would read back as the default, {default}")
        ours = ("entropy_bound", "keep_accepted", "drop_finished", "canvas_length")
        d = {k: v for k, v in asdict(self).items() if k not in ours and v is not None}
        for name in ("t_min", "t_max", "confidence_threshold"):  # plain Python numbers (a numpy one is not JSON)
            if name in d:
                d[name] = float(d[name])
        for name in ("max_denoising_steps", "stability_threshold", "max_new_tokens", "pad_token_id"):
            if name in d:
                d[name] = int(d[name])
        if "eos_token_id" in d:
            eos = d["eos_token_id"]
            d["eos_token_id"] = [int(i) for i in eos] if isinstance(eos, (list, tuple)) else int(eos)
        d["sampler_config"] = {"entropy_bound": float(self.entropy_bound), "_cls_name": "EntropyBoundSamplerConfig"}
        return d


# ------------------------------------------------------------------------------------------ callbacks
@dataclass
class StepInfo:
    """What a per-step callback sees."""

    block: int
    step: int  # 1-based pass within the block
    rows: Tensor  # which batch rows the tensors below hold (all, unless finished rows were dropped)
    canvas: Tensor  # the next input canvas (accepted tokens + noise)
    argmax: Tensor
    accepted: Tensor  # bool [B, L], after constraint re-noising
    renoised_by_constraint: Tensor  # bool [B, L]
    finished: Tensor  # bool [B]
    solved: Tensor  # bool [B]

    def __repr__(self) -> str:  # counts, not the tensors (a print in a callback would fill the screen)
        return (f"StepInfo(block={self.block}, step={self.step}, canvases={self.canvas.shape[0]}, "
                f"accepted={int(self.accepted.sum())}/{self.accepted.numel()}, "
                f"renoised_by_constraint={int(self.renoised_by_constraint.sum())}, "
                f"finished={int(self.finished.sum())}, solved={int(self.solved.sum())})")


StepCallback = Callable[[StepInfo], None]


class FinishClock:
    """A step callback that notes when each canvas row stopped (verified, retired or dropped), in seconds since
    the clock was made, and passes every step on to `callback`. Gives each instance of a batch its own latency.

    With `on_instance`, each instance (`canvases` consecutive rows of a one-block canvas) is handed over as soon
    as all its rows have stopped: `on_instance(k, canvas [canvases, L], passes [canvases], seconds)`, before
    `callback` sees the pass; `finish(output)` hands over the instances whose rows ran out of passes."""

    def __init__(self, rows: int, callback: StepCallback | None = None, *, canvases: int = 1,
                 on_instance: Callable[[int, Tensor, Tensor, float], None] | None = None):
        self.began = time.perf_counter()
        self.stopped_at = torch.full((rows,), math.nan)
        self.callback = callback
        self.canvases, self.on_instance = canvases, on_instance
        self.canvas: Tensor | None = None  # [rows, L] each row's canvas when it stopped (with `on_instance`)
        self.passes = torch.zeros(rows, dtype=torch.long)
        self.handed = torch.zeros(rows // canvases, dtype=torch.bool)

    def __call__(self, info: StepInfo) -> None:
        live = info.rows.cpu()
        newly = info.finished.cpu() & self.stopped_at[live].isnan()
        self.stopped_at[live[newly]] = time.perf_counter() - self.began
        if self.on_instance is not None and newly.any():
            if self.canvas is None:
                self.canvas = torch.zeros(len(self.stopped_at), info.argmax.shape[1], dtype=info.argmax.dtype)
            self.canvas[live[newly]] = info.argmax[newly.to(info.argmax.device)].cpu()
            self.passes[live[newly]] = info.step
            self._hand_over(self.instances_done() & ~self.handed)
        if self.callback is not None:
            self.callback(info)

    def finish(self, output: "GenerationOutput") -> None:
        """Hand over the instances not yet handed over (rows still running when the sampler returned)."""
        running = self.stopped_at.isnan()
        if self.canvas is None:
            self.canvas = output.canvas.cpu().clone()
        self.canvas[running] = output.canvas[running.to(output.canvas.device)].cpu()
        self.passes[running] = output.forward_passes[running.to(output.canvas.device)].cpu()
        self._hand_over(~self.handed)

    def _hand_over(self, instances: Tensor) -> None:
        seconds = self.latency()
        for k in instances.nonzero().squeeze(1).tolist():
            self.handed[k] = True
            rows = slice(k * self.canvases, (k + 1) * self.canvases)
            self.on_instance(k, self.canvas[rows], self.passes[rows], float(seconds[k]))

    def instances_done(self) -> Tensor:
        """[instances] bool: every row of the instance has stopped."""
        return (~self.stopped_at.isnan()).view(-1, self.canvases).all(1)

    def latency(self) -> Tensor:
        """[instances]: seconds until the last of each instance's rows stopped (rows still running when the
        sampler returned stop now)."""
        return self.stopped_at.nan_to_num(time.perf_counter() - self.began).view(-1, self.canvases).amax(1)


@dataclass
class GenerationOutput:
    sequences: Tensor  # [B, prompt + blocks * L], like transformers
    canvas: Tensor  # last committed canvas [B, L]
    forward_passes: Tensor  # [B] decoder passes each row needed
    solved: Tensor  # [B] the verifier accepted the last canvas
    tokens_per_forward: Tensor  # [B]
    cache: KVCache | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------ pieces
def token_entropy(logits: Tensor) -> Tensor:
    """Entropy per position, computed as torch.distributions.Categorical does (masked tokens contribute 0)."""
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(log_probs, dim=-1)
    return -(log_probs.clamp(min=torch.finfo(log_probs.dtype).min) * probs).sum(-1)


def entropy_bound_accept(entropy: Tensor, bound: float) -> Tensor:
    """Accept the k lowest-entropy positions with sum(entropy) - max(entropy) <= bound. Bool [B, L]."""
    sorted_entropy, order = torch.sort(entropy, dim=-1)
    keep = torch.cumsum(sorted_entropy, dim=-1) - sorted_entropy <= bound
    return torch.zeros_like(keep).scatter(-1, order, keep)


def child_generator(parent: torch.Generator, device: str | torch.device) -> torch.Generator:
    """A generator on `device` seeded from `parent`'s stream: GPU sampling driven by a CPU-side seed."""
    return torch.Generator(device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=parent)))


def _randint(vocab: int, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.randint(0, vocab, shape, device=device, generator=generator)


class _StableAndConfident:
    """Stop a row when its argmax canvas is the one of each of the `stability` passes before and its mean entropy
    is below `confidence`. A count of repeats, not a history of canvases: its memory does not grow with
    `stability` (a generation_config.json may name any whole number)."""

    def __init__(self, stability: int, confidence: float):
        self.stability, self.confidence = stability, confidence
        self.last: Tensor | None = None  # [R, L] the previous pass's argmax
        self.repeats: Tensor | None = None  # [R] passes in a row whose argmax equalled the one before

    def __call__(self, argmax: Tensor, entropy: Tensor) -> Tensor:
        if self.last is None:
            self.repeats = torch.zeros(argmax.shape[0], dtype=torch.long, device=argmax.device)
        else:
            self.repeats = torch.where((argmax == self.last).all(-1), self.repeats + 1, 0)
        self.last = argmax.clone()
        return (self.repeats >= self.stability) & (entropy.mean(-1) < self.confidence)

    def select(self, keep: Tensor) -> None:
        """Keep the rows `keep` (rows that finished leave the batch)."""
        if self.last is not None:
            self.last, self.repeats = self.last[keep], self.repeats[keep]


# ------------------------------------------------------------------------------------------ diffusion
@dataclass
class _Rows:
    """The loop's per-row state. With `drop_finished`, rows that are done leave all of it together."""
    index: Tensor  # [R] each row's place in the batch
    canvas: Tensor  # [R, L] what the next pass reads
    argmax: Tensor  # [R, L]
    settled: Tensor  # [R, L] accepted last pass (pins included)
    finished: Tensor  # [R]
    solved: Tensor  # [R]
    skip: Tensor  # [R] finished in an earlier block: not counted
    passes: Tensor  # [R]
    cache: KVCache
    pins: tuple[Tensor, Tensor] | None  # (mask, tokens), each [R, L]
    guidance: Guidance | None
    stopper: _StableAndConfident | None
    sc_logits: Tensor | None = None  # [R, L, V] last pass's logits, for self-conditioning

    def select(self, keep: Tensor) -> _Rows:
        if self.stopper is not None:
            self.stopper.select(keep)
        return _Rows(self.index[keep], self.canvas[keep], self.argmax[keep], self.settled[keep], self.finished[keep],
                     self.solved[keep], self.skip[keep], self.passes[keep], self.cache.select(keep),
                     None if self.pins is None else (self.pins[0][keep], self.pins[1][keep]),
                     None if self.guidance is None else self.guidance.select(keep), self.stopper,
                     None if self.sc_logits is None else self.sc_logits[keep])


@torch.no_grad()
def denoise_canvas(model: DiffusionGemma, cache: KVCache, config: SamplingConfig, *,
                   guidance: Guidance | None = None, generator: torch.Generator | None = None,
                   callback: StepCallback | None = None, block: int = 0,
                   skip: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Denoise one canvas per cache row. Returns (argmax canvas, forward passes [B], solved [B]).

    `skip` [B] marks rows already finished (block-autoregressive EOS); they are not counted.
    """
    b, length, vocab = cache.batch_size, config.canvas_length or model.config.canvas_length, model.config.vocab_size
    device = model.device
    if guidance is not None:
        _check_guidance(guidance, config, device, length, vocab)
    r = _first_rows(b, length, vocab, device, cache, guidance, generator, skip, config)
    if guidance is not None and block == 0:  # after every check: a call refused does not use the hooks up
        guidance.start()
    out_argmax, out_passes, out_solved = r.argmax.clone(), r.passes.clone(), r.solved.clone()
    for remaining in range(config.max_denoising_steps, 0, -1):
        r.passes += ~(r.finished | r.skip)
        logits = model.denoise(r.canvas, r.cache, r.sc_logits) / config.temperature(remaining)  # 0-dim: no copy
        logits, sample, entropy, accepted = _sample_and_accept(logits, r, config, generator)
        accepted, rejected = _reject_violations(r.guidance, sample, r.canvas, accepted)
        new_canvas = torch.where(accepted, sample, _randint(vocab, r.canvas.shape, device, generator))
        new_argmax = logits.argmax(-1)
        if r.pins is not None:
            new_canvas = torch.where(r.pins[0], r.pins[1], new_canvas)
            new_argmax = torch.where(r.pins[0], r.pins[1], new_argmax)
            accepted = accepted | r.pins[0]
        if r.finished.any():  # finished rows stay frozen, as in transformers (their entropy no longer matters)
            new_argmax = torch.where(r.finished[:, None], r.argmax, new_argmax)
            new_canvas = torch.where(r.finished[:, None], r.canvas, new_canvas)
            logits = torch.where(r.finished[:, None, None], r.sc_logits, logits)
        stop = r.stopper(new_argmax, entropy) if r.stopper is not None else torch.zeros_like(r.finished)
        r.solved, stop = _verified(r.guidance, new_argmax, r.finished, r.solved, stop)
        r.finished = r.finished | stop
        r.sc_logits = logits.to(model.dtype)
        r.canvas, r.argmax, r.settled = new_canvas, new_argmax, accepted
        out_argmax[r.index], out_passes[r.index], out_solved[r.index] = r.argmax, r.passes, r.solved
        if callback is not None:
            callback(StepInfo(block, config.max_denoising_steps - remaining + 1, r.index, r.canvas, r.argmax,
                              accepted, rejected, r.finished, r.solved))
        done = r.finished | r.skip
        # transformers keeps denoising rows that ended with EOS in an earlier block (their draws still count)
        if bool(r.finished.all()) or (config.drop_finished and bool(done.all())):
            break
        if config.drop_finished and bool(done.any()):
            r = r.select(torch.nonzero(~done).squeeze(1))
    return out_argmax, out_passes, out_solved


def _first_rows(b: int, length: int, vocab: int, device: torch.device, cache: KVCache, guidance: Guidance | None,
                generator: torch.Generator | None, skip: Tensor | None, config: SamplingConfig) -> _Rows:
    """Uniform-random canvases with the guidance's pins in place (and settled)."""
    canvas = _randint(vocab, (b, length), device, generator)
    settled = torch.zeros(b, length, dtype=torch.bool, device=device)
    pins = guidance.pinned(b, device) if guidance is not None else None
    if pins is not None:
        pins = tuple(pin.expand(b, -1) if pin.dim() == 2 and pin.shape[0] == 1 else pin for pin in pins)  # shared
        _check_pins(pins, (b, length), vocab)
        canvas = torch.where(pins[0], pins[1], canvas)
        settled = pins[0].clone()
    no = torch.zeros(b, dtype=torch.bool, device=device)
    stopper = _StableAndConfident(config.stability_threshold, config.confidence_threshold) \
        if config.adaptive_stopping else None
    return _Rows(torch.arange(b, device=device), canvas, canvas, settled, no, no.clone(),
                 no.clone() if skip is None else skip, torch.zeros(b, dtype=torch.int64, device=device), cache, pins,
                 guidance, stopper)


def _multinomial(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of `probs` [N, V]; FloatingPointError for NaN or infinite values. On the CPU torch
    refuses them inside the draw, so they are looked for only once a draw has failed (no pass pays for it); on a
    GPU the draw's own check is a device-side assert that leaves the process unable to use the device, so the
    values are checked first."""
    if probs.device.type != "cpu" and not bool(probs.isfinite().all()):
        raise _non_finite()
    try:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    except RuntimeError as exc:
        if bool(probs.isfinite().all()):
            raise
        raise _non_finite() from exc


def _non_finite() -> FloatingPointError:
    return FloatingPointError("the model's output holds NaN or infinite values: its weights may be damaged "
                              "(download or save the checkpoint again), or overflow in this dtype")


def _check_pins(pins: tuple[Tensor, Tensor], shape: tuple[int, int], vocab: int) -> None:
    """Refuse pins of another shape ([B, L], or [1, L] for every canvas, expanded before), or pinned ids outside
    the vocabulary (on a GPU the model's embedding lookup would fail with a device-side assert that leaves the
    process unable to use the device)."""
    mask, values = pins
    if tuple(mask.shape) != shape or tuple(values.shape) != shape:
        raise ValueError(f"the guidance pins [{', '.join(map(str, mask.shape))}] tokens; the canvases are "
                         f"[{shape[0]}, {shape[1]}]")
    if mask.any() and not bool(((values >= 0) & (values < vocab))[mask].all()):
        raise ValueError(f"the guidance pins token ids outside the model's vocabulary (0 to {vocab - 1})")


def _sample_and_accept(logits: Tensor, r: _Rows, config: SamplingConfig,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lean and mask the logits as the guidance says, draw a token per position, and accept draws under the
    entropy bound (the guidance may hold back positions it wants settled later). Returns (leaned and masked
    logits, sample, their entropy, accepted)."""
    rows, length, vocab = logits.shape
    if r.guidance is not None:
        bias = r.guidance.bias(r.canvas)
        if bias is not None:
            logits = logits + bias.to(logits.dtype)  # bf16 logits stay bf16
        allowed = r.guidance.allowed(r.canvas, r.settled)
        if allowed is not None:
            # A position with nothing allowed keeps the model's distribution; its violation is re-noised.
            allowed = allowed | ~allowed.any(-1, keepdim=True)
            logits = logits.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    sample = _multinomial(probs.view(-1, vocab), generator).view(rows, length)
    entropy = ranked = token_entropy(logits)  # once per pass: it reads every [R, L, V] logit
    if r.guidance is not None:
        order = r.guidance.settleable(r.canvas, r.settled)
        if order is not None:
            ranked = ranked.masked_fill(~(order | r.settled), float("inf"))
    if config.keep_accepted:
        sample = torch.where(r.settled, r.canvas, sample)
        ranked = ranked.masked_fill(r.settled, 0.0)
    return logits, sample, entropy, entropy_bound_accept(ranked, config.entropy_bound)


def _reject_violations(guidance: Guidance | None, sample: Tensor, canvas: Tensor,
                       accepted: Tensor) -> tuple[Tensor, Tensor]:
    """Accepted draws the guidance rejects go back to noise. Returns (accepted, rejected)."""
    rejected = torch.zeros_like(accepted)
    if guidance is not None:
        bad = guidance.violations(torch.where(accepted, sample, canvas), accepted)
        if bad is not None:
            rejected = bad & accepted
            accepted = accepted & ~bad
    return accepted, rejected


def _verified(guidance: Guidance | None, argmax: Tensor, finished: Tensor, solved: Tensor,
              stop: Tensor) -> tuple[Tensor, Tensor]:
    """Rows whose argmax the guidance verifies are solved and stop, with any it retires. Returns (solved, stop)."""
    if guidance is not None:
        verified = guidance.verify(argmax)
        if verified is not None:
            solved = solved | (verified & ~finished)
            stop = stop | verified
            retired = guidance.retire(solved)
            if retired is not None:
                stop = stop | retired
    return solved, stop


def _check_guidance(guidance: Guidance, config: SamplingConfig, device: torch.device, length: int,
                    vocab: int) -> None:
    """Refuse hooks made for another device or canvas, or that need kept tokens the config does not keep."""
    made_for = guidance.device
    if made_for is not None and not same_device(made_for, device):
        raise ValueError(f"the constraints were compiled for {made_for}, the model is on {device}: "
                         "compile them with device=model.device")
    declared = guidance.canvas_shape
    if declared is not None and tuple(declared) != (length, vocab):
        raise ValueError(f"the constraints were declared for a canvas of {declared[0]} positions over {declared[1]} "
                         f"tokens; this model samples {length} over {vocab}: declare ConstraintModel({length}, "
                         f"{vocab}, ...)")
    if guidance.needs_kept_tokens and not config.keep_accepted:
        raise ValueError(f"{type(guidance).__name__} searches over settled tokens: sample with "
                         "keep_accepted=True (guided_config sets it)")


def released_config(model: DiffusionGemma, **overrides) -> SamplingConfig:
    """The checkpoint's own sampler settings (its generation_config.json; the released defaults when it ships
    none), with `overrides` applied: what "the stock sampler" means for that checkpoint."""
    return replace(model.generation_config or SamplingConfig(), **overrides)


def with_checkpoint_tokens(config: SamplingConfig, model: DiffusionGemma) -> SamplingConfig:
    """`config` with the EOS and pad ids and `max_new_tokens` it leaves unset taken from the checkpoint's
    generation_config.json, as transformers fills a passed config's unset fields (so `SamplingConfig()` stops at
    the released model's end-of-turn tokens). Every other field is used as given."""
    stored = model.generation_config
    if stored is None:
        return config
    names = ("eos_token_id", "pad_token_id", "max_new_tokens")
    unset = {name: getattr(stored, name) for name in names
             if getattr(config, name) is None and getattr(stored, name) is not None}
    return replace(config, **unset) if unset else config


def one_canvas(length: int) -> dict[str, int]:
    """SamplingConfig settings that denoise exactly one canvas of `length` tokens, whatever the checkpoint's
    canvas_length and its generation_config.json's max_new_tokens (more would be further blocks)."""
    return {"canvas_length": length, "max_new_tokens": length}


def guided_config(**overrides) -> SamplingConfig:
    """The full systems' sampler: accepted tokens stay until a constraint re-noises them, finished rows leave the
    batch, and the verifier (not the stability rule) stops a canvas; `overrides` on top (passes, temperature)."""
    return SamplingConfig(**{"keep_accepted": True, "drop_finished": True, "stability_threshold": None, **overrides})


@torch.no_grad()
def generate(model: DiffusionGemma, prompt_ids: Tensor | None, config: SamplingConfig | None = None, *,
             cache: KVCache | None = None, attention_mask: Tensor | None = None,
             guidance: Guidance | None = None, generator: torch.Generator | None = None,
             callback: StepCallback | None = None) -> GenerationOutput:
    """Block-autoregressive diffusion generation.

    `prompt_ids` [B, P] are encoded into `cache` (or a new one); canvases of `canvas_length` tokens are then
    denoised and committed one block at a time until `max_new_tokens` or every row has emitted EOS.
    """
    config = _checked_arguments(model, prompt_ids, config, cache, attention_mask, generator, callback)
    length = config.canvas_length or model.config.canvas_length
    if prompt_ids is not None and prompt_ids.shape[1] > 0:
        cache = model.encode(prompt_ids, cache, attention_mask)
    if cache is None:
        raise ValueError("generate needs a non-empty prompt_ids or a cache")
    b, device = cache.batch_size, model.device
    sequences = prompt_ids if prompt_ids is not None else torch.zeros(b, 0, dtype=torch.long, device=device)
    prompt_len = sequences.shape[1]
    blocks = math.ceil((config.max_new_tokens or RELEASED_NEW_TOKENS) / length)
    eos = torch.tensor(config.eos_ids, device=device) if config.eos_ids else None
    done = torch.zeros(b, dtype=torch.bool, device=device)
    passes = torch.zeros(b, dtype=torch.int64, device=device)
    canvas = solved = None
    for block in range(blocks):
        canvas, block_passes, solved = denoise_canvas(model, cache, config, guidance=guidance, generator=generator,
                                                      callback=callback, block=block, skip=done)
        passes += block_passes
        canvas = canvas.clone()
        newly_done = torch.zeros_like(done) if eos is None else torch.isin(canvas, eos).any(-1)
        if config.pad_token_id is not None:
            padded = _pad_after_eos(canvas, done, eos, config.pad_token_id)
            if guidance is not None and bool((solved & padded).any()):  # padding after EOS may break a constraint
                solved = solved & (~padded | guidance.verify(canvas))
        sequences = torch.cat((sequences, canvas), dim=1)
        done = done | newly_done
        if bool(done.all()) or block == blocks - 1:
            break
        cache = model.encode(canvas, cache)
    new_tokens = sequences[:, prompt_len:]
    valid = new_tokens.shape[1] if config.pad_token_id is None else (new_tokens != config.pad_token_id).sum(-1)
    return GenerationOutput(sequences, canvas, passes, solved, valid / passes.clamp(min=1), cache)


def _checked_arguments(model: DiffusionGemma, prompt_ids: Tensor | None, config: SamplingConfig | None,
                       cache: KVCache | None, attention_mask: Tensor | None, generator: torch.Generator | None,
                       callback: StepCallback | None) -> SamplingConfig:
    """`generate`'s arguments checked before any work; returns the config to sample with."""
    if config is not None and not isinstance(config, SamplingConfig):
        raise TypeError(f"config must be a SamplingConfig (or None: the checkpoint's), got {type(config).__name__}")
    arguments.generator(generator, model.device.type)
    # replace() checks the config again: a field changed after it was made (cfg.max_denoising_steps = 0) is refused
    config = with_checkpoint_tokens(replace(config) if config is not None else released_config(model), model)
    config.check_vocabulary(model.config.vocab_size)
    arguments.callback(callback, "callback")
    if attention_mask is not None and not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a tensor [B, P] (1 for tokens, 0 for padding), got "
                        f"{type(attention_mask).__name__}")
    if cache is not None and not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache (from model.encode or a previous generate), got "
                        f"{type(cache).__name__}")
    adds_nothing = cache is not None and isinstance(prompt_ids, Tensor) and prompt_ids.shape[-1:] == (0,)  # [B, 0]
    if adds_nothing and (prompt_ids.dtype != torch.long or prompt_ids.shape[0] != cache.batch_size):
        raise ValueError(f"prompt_ids: an empty prompt beside a cache must be int64 [{cache.batch_size}, 0], the "
                         f"cache's rows, got {prompt_ids.dtype} {list(prompt_ids.shape)}")
    for name, tensor in (("prompt_ids", prompt_ids), ("attention_mask", attention_mask)):
        _check_on_model_device(tensor, name, model)
    if prompt_ids is not None and not adds_nothing:
        check_token_ids(prompt_ids, "prompt_ids", cache, model.config.vocab_size)
    return config


def _check_on_model_device(tensor: object, name: str, model: DiffusionGemma) -> None:
    if isinstance(tensor, Tensor) and not same_device(tensor.device, model.device):
        raise ValueError(f"{name} is on {tensor.device}, the model on {model.device}: move it there with "
                         f"{name}.to(model.device)")


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one ('cuda' without an index is the current GPU)."""
    return _indexed(a) == _indexed(b)


def _indexed(device: torch.device) -> tuple[str, int]:
    if device.index is not None:
        return device.type, device.index
    return device.type, torch.cuda.current_device() if device.type == "cuda" else 0


def _pad_after_eos(canvas: Tensor, done: Tensor, eos: Tensor | None, pad: int) -> Tensor:
    """Pad (in place) the rows already `done` and every token after a row's first EOS; [B] which rows changed."""
    before = canvas.clone()
    canvas[done] = pad
    if eos is not None:
        is_eos = torch.isin(canvas, eos)
        seen = is_eos.cumsum(-1)
        canvas[(seen > 0) & ~((seen == 1) & is_eos)] = pad
    return (canvas != before).any(-1)


# ------------------------------------------------------------------------------------------ AR baseline
@torch.no_grad()
def generate_autoregressive(model: DiffusionGemma, prompt_ids: Tensor, max_new_tokens: int, *,
                            temperature: float = 0.0, eos_token_id: int | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
    """Token-by-token decoding with the causal encoder (greedy when temperature == 0). Returns new tokens."""
    _check_on_model_device(prompt_ids, "prompt_ids", model)
    check_token_ids(prompt_ids, "prompt_ids", vocab_size=model.config.vocab_size)
    max_new_tokens = arguments.whole(max_new_tokens, "max_new_tokens", 1)
    try:
        temperature = arguments.number(temperature, "temperature", 0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{exc} (0: greedy)") from None
    arguments.generator(generator, model.device.type)
    cache, logits = model.encode_logits(prompt_ids)
    out = []
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    for _ in range(max_new_tokens):
        last = logits[:, -1]
        if temperature > 0:
            token = _multinomial(torch.softmax(last / temperature, -1, dtype=torch.float32), generator)
        else:
            token = last.argmax(-1)
        out.append(token)
        if eos_token_id is not None:
            done |= token == eos_token_id
            if bool(done.all()):
                break
        cache, logits = model.encode_logits(token[:, None], cache)
    return torch.stack(out, dim=1)
