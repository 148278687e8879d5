"""`solve demo`: the tiny sorting model denoising a canvas pass by pass."""

from __future__ import annotations

import time

import torch
import typer

from ..core import SamplingConfig, StepInfo, generate, one_canvas
from ..tasks.text import plural
from .checkpoints import check_task_model
from .cli_common import DEVICE, SEED_RANGE, THREADS, app, console, load_task_model, usage_error


@app.command()
def demo(
    digits: str = typer.Option(None, help="16 digits to sort, e.g. 3141592653589793 (default: random)."),
    seed: int = typer.Option(0, **SEED_RANGE, help="Seed for the random input and the sampler."),
    checkpoint: str = typer.Option(None, help="Checkpoint directory or hub id (default: the shipped demo)."),
    guided: bool = typer.Option(True, help="Apply the task's constraints every pass (off: the model alone)."),
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Load the shipped tiny checkpoint and watch a canvas denoise: 16 digits sorted by diffusion.

    Exit status: 0 done (the last line says whether the answer is verified), 2 bad input."""
    from ..tasks import sorting

    if digits is None:
        values = torch.randint(0, 10, (1, sorting.LENGTH), generator=torch.Generator().manual_seed(seed))
    else:
        if len(digits) != sorting.LENGTH or not all(c in "0123456789" for c in digits):
            usage_error(f"--digits needs exactly {sorting.LENGTH} digits, got {digits!r}")
        values = torch.tensor([[int(c) for c in digits]])
    def check(model) -> None:  # the model, or (before its weights are read) the checkpoint's header
        check_task_model(model, "sorting", sorting.TOKENIZER, sorting.LENGTH, exact=True)

    model = load_task_model(checkpoint, "sorting", device, threads, lambda model: check(model) or model,
                            check_header=check)
    prompt = sorting.encode_prompt(values).to(device)
    console.print(f"input     {''.join(map(str, values[0].tolist()))}")

    def show(info: StepInfo) -> None:
        text = sorting.decode(info.argmax)[0]
        marks = "".join("[green]" + c + "[/green]" if ok else "[dim]" + c + "[/dim]"
                        for c, ok in zip(text, info.accepted[0].tolist()))
        console.print(f"pass {info.step:>3}  {marks}  accepted {int(info.accepted[0].sum()):>2}/{sorting.LENGTH}"
                      + ("  [yellow]re-noised[/yellow] " + str(int(info.renoised_by_constraint[0].sum()))
                         if info.renoised_by_constraint[0].any() else ""))

    config = SamplingConfig(keep_accepted=guided, **one_canvas(sorting.LENGTH))
    guidance = sorting.constraints(values, device) if guided else None
    started = time.perf_counter()
    out = generate(model, prompt, config, guidance=guidance, callback=show,
                   generator=torch.Generator(device).manual_seed(seed))
    seconds = time.perf_counter() - started
    answer = sorting.decode(out.canvas)[0]
    correct = answer == "".join(sorted(map(str, values[0].tolist())))
    if guided:
        verdict = "[green]verified[/green]" if bool(out.solved[0]) else "[red]no verified answer[/red]"
    else:
        verdict = "[green]correct[/green]" if correct else "[red]wrong[/red]"
    passes = int(out.forward_passes[0])
    console.print(f"output    {answer}  {verdict}  ({plural(passes, 'pass', 'passes')}, {seconds:.2f} s)")
