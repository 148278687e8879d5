"""`CountdownSolver`: Countdown and the Game of 24 by constraint-guided diffusion (the graphs checkpoint); every
answer is replayed exactly with sympy before it is returned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from torch import Tensor

from ..core import DiffusionGemma, StepCallback, arguments
from ..tasks import countdown
from ..tasks.graph_data import CANVAS, TOKENIZER, countdown_prompt
from ..tasks.text import plural
from .base import UNFINISHED, DiffusionSolver, unsolved


@dataclass
class CountdownResult:
    """One instance's answer: `expression` (infix) and `steps` (the same as 'a+b=c,...': the solution's steps, not a
    count of passes, which is `forward_passes`) only when sympy `verified` them; else `reason`, and `impossible`
    when an exhaustive check proved that no solution exists. `to_dict()` for JSON or pandas; str() is one line."""

    numbers: list[int]
    target: int
    steps: str | None  # 'a+b=c,...', only when verified
    expression: str | None
    verified: bool
    reason: str | None
    forward_passes: int = 0
    seconds: float = 0.0
    impossible: bool = False  # proved that no solution exists (exhaustive check), not a search that gave up

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        """'86,28,13,31 -> 96: 86+28-31+13 (verified, 40 passes, 0.21 s)', or the reason there is none."""
        answer = f"{self.expression} (verified, " if self.verified else f"no verified answer: {self.reason} ("
        return (f"{','.join(map(str, self.numbers))} -> {self.target}: {answer}"
                f"{plural(self.forward_passes, 'pass', 'passes')}, {self.seconds:.2f} s)")


UNSOLVABLE = ("no solution that uses every number exactly once exists (exhaustive check; every step must give a "
              "whole number, a fraction along the way is not allowed)")


class CountdownSolver(DiffusionSolver):
    """Countdown / Game of 24: combine every number exactly once with + - * / to reach the target (unlike the TV
    game, which may leave numbers out); every intermediate result a non-negative whole number (the Countdown rule:
    8 / (3 - 8/3) = 24 does not count).

    16 parallel canvases by default (8 elsewhere): they share the dead pools each one finds, so more canvases
    learn more per pass (first 32 evenly spaced CD5 instances: 8 canvases 22/32, 16 canvases 28/32). 256 passes
    (128 elsewhere): solved instances stop early, and the harder ones need them (128 evenly spaced CD5
    instances: 112 solved in 128 passes, 119 in 256)."""

    CHECKPOINT, TOKENIZER, CANVAS = "graphs", TOKENIZER, max(CANVAS.values())
    DEFAULT_CANVASES = 16

    def __init__(self, model: DiffusionGemma, *, guided: bool = True, canvases: int | None = None,
                 max_steps: int = 256, seed: int = 0, temperature: float | None = None):
        super().__init__(model, guided=guided, canvases=canvases, max_steps=max_steps, seed=seed,
                         temperature=temperature)

    def solve(self, numbers: Sequence[int], target: int, callback: StepCallback | None = None) -> CountdownResult:
        """Reach `target` from `numbers` (each used once). The result's `expression` (infix) and `steps`
        ('a+b=c,...') are set only when sympy verified them; an impossible instance says so in `reason`."""
        return self.solve_many([(numbers, target)], callback=callback)[0]

    def solve_many(self, instances: Sequence[tuple[Sequence[int], int]], *, batch: int = 32,
                   callback: StepCallback | None = None,
                   on_result: Callable[[int, CountdownResult], None] | None = None,
                   progress: bool = False) -> list[CountdownResult]:
        """Instances in batches of `batch` (each with its parallel canvases); `on_result(index, result)` fires as
        soon as an instance's canvases have stopped (the impossible instances first: they need no sampling).
        `progress=True` shows a progress bar of instances done. Ctrl-C raises BatchInterrupted (a
        KeyboardInterrupt) whose `results` keep the instances answered until then."""
        with arguments.raised_as(countdown.CountdownError):
            instances = arguments.items(instances, "instances")
            batch = arguments.whole(batch, "batch", 1)
            arguments.callback(callback, "callback")
            arguments.callback(on_result, "on_result")
            progress = arguments.flag(progress, "progress")
        checked = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, (tuple, list)) or len(instance) != 2:
                raise countdown.CountdownError(f"instance {i}: expected (numbers, target), got {instance!r}")
            with arguments.numbered("instance", i, len(instances)):
                numbers, target = countdown.whole_numbers(*instance)
                countdown.check_instance(numbers, target)
            checked.append((numbers, target))
        # The exhaustive check takes at most about 0.3 s (six numbers): an impossible instance is answered
        # unsampled, not after the whole budget of passes, and batches hold solvable instances only.
        results = [None if countdown.solvable(numbers, target) else
                   CountdownResult(numbers, target, None, None, False, UNSOLVABLE, impossible=True)
                   for numbers, target in checked]
        return self._in_batches(
            results, [i for i, result in enumerate(results) if result is None], batch,
            lambda chunk, report: self._solve_batch([checked[i] for i in chunk], callback, report),
            lambda i: CountdownResult(*checked[i], None, None, False, UNFINISHED), progress, "countdown",
            "instance", on_result)

    def _solve_batch(self, chunk: list[tuple[list[int], int]], callback,
                     report: Callable[[int, CountdownResult], None]) -> None:
        """Solve one batch, calling `report(k, result)` for instance k as soon as all its canvases have stopped."""
        def result(k: int, canvas: Tensor, passes: Tensor, seconds: float) -> None:
            numbers, target = chunk[k]
            steps = next((text for text in countdown.decode(canvas)
                          if text and countdown.verify_steps(numbers, target, text)), None)
            if steps is not None:
                report(k, CountdownResult(numbers, target, steps, countdown.infix(numbers, steps), True, None,
                                          int(passes.sum()), seconds))
            else:  # an impossible instance was answered before sampling (`solve_many`)
                reason = (f"{unsolved(passes, self.max_steps)}, though a solution exists (exhaustive check): more "
                          "passes or canvases may find it, unless every solution's steps are longer than the canvas "
                          f"({CANVAS['countdown']} characters)")
                report(k, CountdownResult(numbers, target, None, None, False, reason, int(passes.sum()), seconds))

        guidance = countdown.CountdownGuidance(chunk, self.model.device, seed=self.seed)
        self._run([countdown_prompt(n, t) for n, t in chunk], guidance, CANVAS["countdown"], callback=callback,
                  on_instance=result)
