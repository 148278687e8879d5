"""`DiffusionSolver`: what every task's solver shares -- the model-only and full-system sampling settings, and
denoising a batch of prompts with parallel canvases per prompt under a task's guidance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from tokenizers import Tokenizer
from torch import Tensor

from ..core import (DiffusionGemma, FinishClock, Guidance, Pins, SamplingConfig, StepCallback, arguments, generate,
                    guided_config, one_canvas, progress_bar, released_config)
from ..tasks.text import plural
from .checkpoints import Pretrained


UNFINISHED = "interrupted before it was solved"  # the reason of an unfinished item's result after Ctrl-C


def unsolved(passes: Tensor, budget: int) -> str:
    """Why an item's canvases (`passes`: the passes each one ran) stopped with no verified answer: the budget
    ran out, or every canvas stopped early (settled, or a dead end retired it)."""
    used, allowed = int(passes.max()), plural(budget, "pass", "passes")
    return (f"the budget of {allowed} ran out" if used >= budget
            else f"the canvases settled on no solution after {used} of {allowed}")


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batched call: `results` holds one result per item in input order, those done as they
    came and the others unsolved with the reason UNFINISHED."""

    def __init__(self, results: list):
        done = sum(result.reason != UNFINISHED for result in results)
        super().__init__(f"stopped with {done} of {len(results)} done")
        self.results = results

    def __reduce__(self):  # pickled and copied with its results (multiprocessing, joblib), not its message
        return type(self), (self.results,)


class DiffusionSolver(Pretrained):
    """Shared plumbing: `guided=True` is the full system (masks, re-noising, verifier, accepted tokens kept,
    parallel canvases); `guided=False` is the stock sampler on one canvas (model only). A task names its
    checkpoint, `TOKENIZER` and the longest canvas it samples (`CANVAS`), which the model must hold."""

    TOKENIZER: Tokenizer
    CANVAS: int
    DEFAULT_CANVASES = 8

    def __init__(self, model: DiffusionGemma, *, guided: bool = True, canvases: int | None = None,
                 max_steps: int = 128, seed: int = 0, temperature: float | None = None):
        self.check_checkpoint(model)
        self.model, self.seed = model, arguments.seed(seed)
        self.guided = guided = arguments.flag(guided, "guided")
        self.canvases = arguments.canvases(canvases, guided, self.DEFAULT_CANVASES)
        self.max_steps = arguments.steps(max_steps)
        if temperature is not None:
            temperature = arguments.positive(temperature, "temperature")
        self.temperature = temperature if guided else None  # None: each problem's own (see GraphSolver's routes)

    def __repr__(self) -> str:
        steps = self._config(self.CANVAS).max_denoising_steps  # what it samples with
        settings = {"canvases": self.canvases, "max_steps": steps, "seed": self.seed, **self._more_settings()}
        if (temperature := self._temperature_shown()) is not None:
            settings["temperature"] = temperature
        return (f"{type(self).__name__}({self.model.source or 'model'}, {self._mode()}, "
                + ", ".join(f"{name}={value}" for name, value in settings.items()) + ")")

    def _more_settings(self) -> dict:
        """A task's own settings that change its answers, for the repr."""
        return {}

    def _temperature_shown(self) -> str | None:
        """A constant temperature set for every problem, for the repr (None: each problem's own schedule)."""
        return None if self.temperature is None else f"{self.temperature}"

    def _mode(self) -> str:
        return "guided" if self.guided else "model only"

    def _config(self, length: int, max_steps: int | None = None, temperature: float | None = None) -> SamplingConfig:
        steps = max_steps or self.max_steps
        if not self.guided:  # the stock sampler at the checkpoint's own settings (its generation_config.json)
            return released_config(self.model, max_denoising_steps=steps, drop_finished=True, **one_canvas(length))
        config = guided_config(max_denoising_steps=steps, **one_canvas(length))
        temperature = self.temperature or temperature
        if temperature is not None:
            config = replace(config, t_min=temperature, t_max=temperature)
        return config

    @staticmethod
    def _in_batches(results: list, todo: list[int], per_batch: int,
                    solve_chunk: Callable[[list[int], Callable[[int, object], None]], None],
                    unfinished: Callable[[int], object], progress: bool, what: str, noun: str,
                    on_result: Callable[[int, object], None] | None = None) -> list:
        """Answer the items of `results` that are None, listed in `todo`, `per_batch` at a time:
        `solve_chunk(chunk, report)` samples the items of `chunk` and calls `report(k, result)` for its k-th as soon
        as that one is answered. `on_result(i, result)` fires for every item, those answered beforehand first;
        `progress` shows a bar of items done. Ctrl-C raises BatchInterrupted keeping every item answered until
        then, `unfinished(i)` for the others."""
        verified = 0

        def report(i: int, result) -> None:
            nonlocal verified
            results[i], verified = result, verified + bool(result.verified)
            bar.set_postfix(verified=verified, refresh=False)  # drawn by the update
            bar.update()
            if on_result is not None:
                on_result(i, result)

        try:
            with progress_bar(progress, len(results), what, noun) as bar:
                for i, result in enumerate(list(results)):
                    if result is not None:
                        report(i, result)
                for start in range(0, len(todo), per_batch):
                    chunk = todo[start:start + per_batch]
                    solve_chunk(chunk, lambda k, result, chunk=chunk: report(chunk[k], result))
        except KeyboardInterrupt:  # what was answered is kept
            raise BatchInterrupted([result if result is not None else unfinished(i)
                                    for i, result in enumerate(results)]) from None
        return results

    @torch.no_grad()
    def _run(self, prompts: list[list[int]] | Tensor, guidance: Guidance, length: int, *, max_steps: int | None = None,
             callback: StepCallback | None = None, salt: int = 0, retire: bool = True,
             temperature: float | None = None, on_instance: Callable[[int, Tensor, Tensor, float], None] | None = None):
        """Denoise `canvases` canvases per prompt. Returns (canvases [R, L], passes [R], seconds [prompts]); rows of
        a prompt are consecutive; seconds run from this call until the prompt's canvases stopped. Model-only runs
        keep nothing of the guidance but its pins. `on_instance`: see `FinishClock`."""
        clock = FinishClock(len(prompts) * self.canvases, callback, canvases=self.canvases, on_instance=on_instance)
        device = self.model.device
        rows = torch.arange(len(prompts), device=device).repeat_interleave(self.canvases)
        cache = self.model.encode(torch.as_tensor(prompts, device=device)).select(rows)
        if not self.guided:
            guidance = Pins.of(guidance, len(prompts), device)
        guidance = guidance.repeat(self.canvases)
        if not retire:
            guidance = KeepSiblings(guidance)
        out = generate(self.model, None, self._config(length, max_steps, temperature), cache=cache, guidance=guidance,
                       callback=clock, generator=torch.Generator(device).manual_seed(self.seed + salt))
        if on_instance is not None:
            clock.finish(out)
        return out.canvas.cpu(), out.forward_passes.cpu(), clock.latency().tolist()


class KeepSiblings(Guidance):
    """Every hook of `inner` but `retire`: each canvas runs to its own end (to collect several answers)."""

    def __init__(self, inner: Guidance):
        self.inner = inner
        self.needs_kept_tokens, self.device, self.canvas_shape = inner.needs_kept_tokens, inner.device, \
            inner.canvas_shape

    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        return self.inner.pinned(batch, device)

    def bias(self, canvas: Tensor) -> Tensor | None:
        return self.inner.bias(canvas)

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        return self.inner.allowed(canvas, settled)

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor | None:
        return self.inner.violations(canvas, accepted)

    def settleable(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        return self.inner.settleable(canvas, settled)

    def verify(self, canvas: Tensor) -> Tensor | None:
        return self.inner.verify(canvas)

    def start(self) -> None:
        self.inner.start()

    def select(self, rows: Tensor) -> "KeepSiblings":
        return KeepSiblings(self.inner.select(rows))

    def repeat(self, n: int) -> "KeepSiblings":
        return KeepSiblings(self.inner.repeat(n))
