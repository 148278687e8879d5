"""Builds small transformers `DiffusionGemmaForBlockDiffusion` models as the numerical reference (tests only)."""

from __future__ import annotations

import torch

from diffsolve.core.config import TINY_VISION_CONFIG

TINY_TEXT = dict(
    vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, global_head_dim=16, num_global_key_value_heads=1, sliding_window=6,
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    num_experts=6, top_k_experts=2, moe_intermediate_size=16,
)


def hf_model(seed: int = 0, canvas_length: int = 10, dtype=torch.float32, weight_std: float = 0.15, **text_overrides):
    """A random reference model with norms, router scales and both sides' layer scalars moved away from 1."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    cfg = DiffusionGemmaConfig(text_config={**TINY_TEXT, **text_overrides}, vision_config=dict(TINY_VISION_CONFIG),
                               canvas_length=canvas_length)
    cfg.text_config._attn_implementation = "sdpa"
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vision" in name:
                continue
            if p.dim() == 1:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(weight_std * torch.randn(p.shape, generator=gen))
        for name, buf in model.named_buffers():
            if name.endswith("layer_scalar"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    return model.to(dtype)
