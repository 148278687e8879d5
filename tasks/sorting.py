"""Sorting digits: the engine's demo task (prompt: 16 digits; canvas: the same digits in ascending order).

Small enough to train on a laptop CPU in minutes, and verifiable: the answer must be ascending and a
permutation of the input, which the constraint model checks on every canvas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..constraints import CompiledConstraints, ConstraintModel
from ..core import DiffusionGemma, ModelConfig, word_level_tokenizer
from ..core.training import Batch

LENGTH = 16
DIGITS = [str(d) for d in range(10)]
TOKENIZER = word_level_tokenizer(DIGITS)
DIGIT_IDS = [TOKENIZER.token_to_id(d) for d in DIGITS]
BOS = TOKENIZER.token_to_id("<bos>")


def model_config() -> ModelConfig:
    return ModelConfig(
        vocab_size=TOKENIZER.get_vocab_size(), hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, num_experts=4, top_k_experts=2, moe_intermediate_size=64,
        layer_types=["sliding_attention", "full_attention"], sliding_window=32,
        per_layer_overrides={1: {"head_dim": 32, "num_key_value_heads": 1}}, canvas_length=LENGTH,
    )


def encode_prompt(digits: Tensor) -> Tensor:
    """[B, 16] digit values -> prompt ids [B, 17] (BOS + digits)."""
    ids = torch.tensor(DIGIT_IDS, device=digits.device)[digits]
    return torch.cat((torch.full((digits.shape[0], 1), BOS, device=digits.device), ids), dim=1)


def decode(canvas: Tensor) -> list[str]:
    return [TOKENIZER.decode(row.tolist()).replace(" ", "") for row in canvas]


def make_batch(generator: torch.Generator, batch_size: int = 64) -> Batch:
    digits = torch.randint(0, 10, (batch_size, LENGTH), generator=generator)
    prompt = encode_prompt(digits)
    return Batch(prompt, prompt[:, 1:].sort(dim=-1).values)


def batches(out_dir, seed: int, batch_size: int, device: str, **_) -> Callable[[int, torch.Generator], Batch]:
    """Training batches for `core.training.train` (drawn from the step's seeded generator)."""
    return lambda step, generator: make_batch(generator, batch_size)


def constraints(digits: Tensor, device: str | torch.device = "cpu") -> CompiledConstraints:
    """Canvas = ascending permutation of each row's input digits."""
    vocab = TOKENIZER.get_vocab_size()
    wanted = torch.nn.functional.one_hot(encode_prompt(digits)[:, 1:], vocab).sum(1).to(device)  # [B, V]
    cm = ConstraintModel(LENGTH, vocab, batch_size=digits.shape[0])
    for row, row_digits in enumerate(digits):
        cm.allow(range(LENGTH), torch.tensor(DIGIT_IDS)[row_digits.unique()].tolist(), row=row)

    def counts(canvas: Tensor, where: Tensor) -> Tensor:
        return (torch.nn.functional.one_hot(canvas, vocab) * where.unsqueeze(2)).sum(1)

    def verify(canvas: Tensor, rows: Tensor) -> Tensor:
        ascending = (canvas[:, 1:] >= canvas[:, :-1]).all(-1)
        return ascending & (counts(canvas, torch.ones_like(canvas)) == wanted[rows]).all(-1)

    def locate(canvas: Tensor, accepted: Tensor, rows: Tensor) -> Tensor:
        # Tokens accepted more often than the input holds them are all blamed.
        excess = counts(canvas, accepted) > wanted[rows]  # [B, V]
        return excess.gather(1, canvas)

    cm.add_predicate("ascending permutation of the input", verify, locate)
    return cm.compile(device)


@torch.no_grad()
def evaluate(model: DiffusionGemma, n: int = 128, seed: int = 10**9) -> dict[str, float]:
    """Exact-match rate of the model alone (stock sampler) and verified rate with constraint guidance,
    on fresh random inputs (a seed range the training batches never use)."""
    from ..core import SamplingConfig, generate, one_canvas

    digits = torch.randint(0, 10, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
    prompt = encode_prompt(digits).to(model.device)
    truth = prompt[:, 1:].sort(dim=-1).values
    stock = generate(model, prompt, SamplingConfig(**one_canvas(LENGTH)),
                     generator=torch.Generator(model.device).manual_seed(seed))
    guided = generate(model, prompt, SamplingConfig(keep_accepted=True, **one_canvas(LENGTH)),
                      guidance=constraints(digits, model.device),
                      generator=torch.Generator(model.device).manual_seed(seed))
    return {
        "model_only_exact": (stock.canvas == truth).all(-1).float().mean().item(),
        "guided_verified": guided.solved.float().mean().item(),
        "guided_passes_mean": guided.forward_passes.float().mean().item(),
    }
