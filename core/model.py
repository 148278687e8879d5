"""The DiffusionGemma text model: one MoE transformer stack used two ways.

* `encode` runs it as a **causal encoder** over prompt tokens (and, block by block, over each committed canvas)
  and returns a new `KVCache` holding their keys and values.
* `denoise` runs it as a **bidirectional decoder** over `[cached prefix ; canvas]`; it reads the cache and never
  writes it, so one prompt cache serves every denoising pass and every parallel canvas.

Encoder and decoder share every weight except `layer_scalar`, which the checkpoint stores per side.
Numerics follow transformers 5.23.0 `DiffusionGemmaForBlockDiffusion` (norms in fp32, attention scale 1.0,
fp32 router softmax, logits softcapped in fp32).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FULL, LayerSpec, ModelConfig


# ---------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class KVCache:
    """Keys/values of everything encoded so far. Immutable: `encode` returns a new cache.

    Sliding layers keep only the last `window - 1` tokens; full layers keep all of them.
    `valid` marks real (non-padding) tokens over all `length` positions; None means all are real.
    """

    keys: tuple[Tensor, ...]  # per layer [B, kv_heads, stored, head_dim]
    values: tuple[Tensor, ...]
    length: int
    valid: Tensor | None = None  # [B, length] bool

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def select(self, rows: Tensor | list[int]) -> "KVCache":
        """Rows of the batch (e.g. one prompt cache repeated for parallel canvases: `select([0] * n)`)."""
        rows = torch.as_tensor(rows, device=self.keys[0].device)
        return KVCache(tuple(k[rows] for k in self.keys), tuple(v[rows] for v in self.values), self.length,
                       None if self.valid is None else self.valid[rows])

    def truncate(self, length: int, window: int, layers: list[LayerSpec]) -> "KVCache":
        """The cache as it stood after the first `length` tokens (used by training to drop the clean answer).

        Only valid when no sliding layer had evicted tokens the shorter cache would still need,
        i.e. when it was built in one `encode` call that stored the full prefix.
        """
        keys, values = [], []
        for spec, k, v in zip(layers, self.keys, self.values):
            start = max(length - window + 1, 0) if spec.is_sliding else 0
            first_stored = self.length - k.shape[2]
            if start < first_stored:
                raise ValueError("cannot truncate: the sliding window already evicted needed tokens")
            keys.append(k[:, :, start - first_stored:length - first_stored])
            values.append(v[:, :, start - first_stored:length - first_stored])
        valid = None if self.valid is None else self.valid[:, :length]
        return KVCache(tuple(keys), tuple(values), length, valid)


# --------------------------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 with a plain (not 1 + w) scale; `with_scale=False` has no weight."""

    def __init__(self, dim: int, eps: float, with_scale: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if with_scale else None

    def forward(self, x: Tensor) -> Tensor:
        # mean(x^2) as |x|^2 / dim, with eps as a cached tensor: on the small tensors of task models this is
        # twice as fast as the textbook form or F.rms_norm on CPU (per-op overhead, Python scalars wrapped).
        x32 = x.float()
        norm = torch.linalg.vector_norm(x32, dim=-1, keepdim=True)
        y = x32 * torch.addcmul(_scalar(self.eps, x.device), norm, norm, value=1 / x.shape[-1]).rsqrt()
        if self.weight is not None:
            y = y * self.weight.float()
        return y.to(x.dtype)


_SCALARS: dict[tuple[float, torch.device], Tensor] = {}


def _scalar(value: float, device: torch.device) -> Tensor:
    """A cached fp32 0-dim tensor."""
    key = (value, device)
    if key not in _SCALARS:
        with torch.inference_mode(False):  # usable later with autograd too
            _SCALARS[key] = torch.tensor(value, dtype=torch.float32, device=device)
    return _SCALARS[key]


def _activation(name: str):
    # a partial, not a lambda: a model (and a solver holding one) must pickle, for process pools
    return {"gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"), "gelu": F.gelu}[name]


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act = _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def apply_rope(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin, with rotate_half(x) * sin == roll(x, half) * signed_sin."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: LayerSpec):
        super().__init__()
        self.spec = spec
        self.num_heads = cfg.num_heads
        h, d, kv = cfg.hidden_size, spec.head_dim, spec.num_kv_heads
        self.q_proj = nn.Linear(h, cfg.num_heads * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(h, kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(h, kv * d, bias=cfg.attention_bias) if spec.has_v_proj else None
        self.o_proj = nn.Linear(cfg.num_heads * d, h, bias=cfg.attention_bias)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.v_norm = RMSNorm(d, cfg.rms_norm_eps, with_scale=False)

    def project_kv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of new tokens, [B, kv_heads, T, head_dim]."""
        b, t, _ = x.shape
        d = self.spec.head_dim
        raw_k = self.k_proj(x).view(b, t, -1, d)
        raw_v = self.v_proj(x).view(b, t, -1, d) if self.v_proj is not None else raw_k
        k = apply_rope(self.k_norm(raw_k), cos, sin)
        v = self.v_norm(raw_v)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor | None, past_v: Tensor | None,
                mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from `x` over `[past ; x]`. Returns (output, keys, values), the keys and values of `[past ; x]`."""
        b, t, _ = x.shape
        q = apply_rope(self.q_norm(self.q_proj(x).view(b, t, self.num_heads, self.spec.head_dim)), cos, sin)
        q = q.transpose(1, 2)
        k_new, v_new = self.project_kv(x, cos, sin)
        k = k_new if past_k is None else torch.cat((past_k, k_new), dim=2)
        v = v_new if past_v is None else torch.cat((past_v, v_new), dim=2)
        # CUDA runs grouped key/value heads only in its math kernel when there is a mask or head_dim > 256 (the
        # 26B's full layers): a full fp32 score matrix per head. Repeating the heads keeps the fused kernels, as
        # transformers does.
        expand = q.is_cuda and (mask is not None or k.shape[-1] > 256)
        return self.o_proj(attend(q, k, v, mask, expand).transpose(1, 2).reshape(b, t, -1)), k, v


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, expand_kv_heads: bool = False) -> Tensor:
    """Scaled dot-product attention (scale 1: the q/k norms set it) of [B, H, T, D] queries over [B, KV, S, D] keys
    and values, each key/value head serving H / KV query heads; `expand_kv_heads` repeats them first."""
    grouped = k.shape[1] != q.shape[1]
    if grouped and expand_kv_heads:
        repeats = q.shape[1] // k.shape[1]
        k, v, grouped = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0, enable_gqa=grouped)


class Router(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k = cfg.top_k_experts
        self.root_size = cfg.hidden_size ** -0.5
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, with_scale=False)
        self.proj = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.per_expert_scale = nn.Parameter(torch.ones(cfg.num_experts))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Top-k expert weights (fp32, renormalised, scaled per expert) and indices, both [T, k]."""
        scores = self.proj(self.norm(x) * self.scale * self.root_size)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        weights, index = torch.topk(probs, k=self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.per_expert_scale[index], index


# Below this many (token, expert) pairs every expert runs on every token: a few extra small matmuls cost less
# than the dozen indexing ops that group tokens by expert (per-op overhead dominates small task models). Not
# when most experts would get no token (a few tokens of the 26B, 8 of 128 experts each): reading every expert's
# weights would cost up to 16x the memory traffic.
DENSE_MOE_LIMIT = 2048


class Experts(nn.Module):
    """All experts as stacked weights; tokens are grouped by expert and run as one batched matmul (or, for a
    handful of tokens, every expert runs on every token)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e, h, i = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))
        self.act = _activation(cfg.hidden_activation)

    def forward(self, x: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        experts, k = self.gate_up_proj.shape[0], index.shape[1]
        # Compiled, the grouping's data-dependent shapes would split the graph; with up to 4x the routed work
        # the dense form is still the faster one there.
        few_pairs = index.shape[0] * experts <= DENSE_MOE_LIMIT and experts <= 2 * index.numel()
        if few_pairs or (torch.compiler.is_compiling() and experts <= 4 * k):
            return self._dense(x, weights, index)
        return self._grouped(x, weights, index)

    def _dense(self, x: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        """Every expert on every token, combined with the routing weights (zero for unrouted experts)."""
        combine = weights.new_zeros(index.shape[0], self.gate_up_proj.shape[0]).scatter_(1, index, weights)
        gate, up = torch.matmul(x, self.gate_up_proj.transpose(1, 2)).chunk(2, dim=-1)  # [E, T, I] each
        y = torch.bmm(self.act(gate) * up, self.down_proj.transpose(1, 2))  # [E, T, H]
        return (y * combine.t()[:, :, None]).sum(0).to(x.dtype)

    def _grouped(self, x: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        tokens, k = index.shape
        flat = index.reshape(-1)
        order = torch.argsort(flat, stable=True)
        expert_of = flat[order]
        token_of = order // k
        counts = torch.bincount(flat, minlength=self.gate_up_proj.shape[0])
        # Only experts that received tokens are run (matters for few tokens and many experts, e.g. AR decoding).
        # The shapes below depend on the counts: one copy to the host, not one wait per use.
        counts_host = counts.cpu()
        active = torch.nonzero(counts_host).squeeze(1).to(counts.device)
        slot_of_expert = torch.full_like(counts, -1)
        slot_of_expert[active] = torch.arange(active.numel(), device=counts.device)
        group = slot_of_expert[expert_of]
        starts = torch.cumsum(counts, 0) - counts
        row = torch.arange(flat.numel(), device=flat.device) - starts[expert_of]
        capacity = int(counts_host.max())

        grouped = x.new_zeros(active.numel(), capacity, x.shape[-1])
        grouped[group, row] = x[token_of]
        every = active.numel() == counts.numel()
        gate_up = self.gate_up_proj if every else self.gate_up_proj[active]
        down = self.down_proj if every else self.down_proj[active]
        gate, up = torch.bmm(grouped, gate_up.transpose(1, 2)).chunk(2, dim=-1)
        y = torch.bmm(self.act(gate) * up, down.transpose(1, 2))[group, row]
        y = (y * weights.reshape(-1)[order, None]).to(x.dtype)
        # Each token's k outputs added one by one in expert order, as transformers' loop over experts adds them
        # (the same bits on the CPU). Not index_add_: on CUDA its atomics add in whatever order they land, so the
        # same seed could sample differently from run to run.
        routed = torch.empty_like(y)
        routed[order] = y  # (token, slot) order
        by_expert = routed.view(tokens, k, -1).gather(1, index.argsort(1)[:, :, None].expand(-1, -1, y.shape[-1]))
        out = by_expert[:, 0].clone()
        for slot in range(1, k):  # k, the experts per token: a few vectorized adds, not a loop over experts
            out += by_expert[:, slot]
        return out


class Layer(nn.Module):
    """Attention, then a dense gated MLP in parallel with the MoE; Gemma's sandwich norms; a layer scalar."""

    def __init__(self, cfg: ModelConfig, spec: LayerSpec):
        super().__init__()
        h, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = Attention(cfg, spec)
        self.mlp = GatedMLP(h, cfg.intermediate_size, cfg.hidden_activation)
        self.router = Router(cfg)
        self.experts = Experts(cfg)
        self.input_layernorm = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.pre_feedforward_layernorm = RMSNorm(h, eps)
        self.post_feedforward_layernorm = RMSNorm(h, eps)
        self.post_feedforward_layernorm_1 = RMSNorm(h, eps)
        self.pre_feedforward_layernorm_2 = RMSNorm(h, eps)
        self.post_feedforward_layernorm_2 = RMSNorm(h, eps)
        # Stored separately per side in the checkpoint (encoder vs decoder).
        self.register_buffer("encoder_scalar", torch.ones(1))
        self.register_buffer("decoder_scalar", torch.ones(1))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor | None, past_v: Tensor | None,
                mask: Tensor | None, scalar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        attn, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_k, past_v, mask)
        x = x + self.post_attention_layernorm(attn)

        dense = self.post_feedforward_layernorm_1(self.mlp(self.pre_feedforward_layernorm(x)))
        flat = x.reshape(-1, x.shape[-1])
        weights, index = self.router(flat)
        sparse = self.experts(self.pre_feedforward_layernorm_2(flat), weights, index)
        sparse = self.post_feedforward_layernorm_2(sparse.view_as(x))
        x = x + self.post_feedforward_layernorm(dense + sparse)
        return x * scalar, k, v


class SelfConditioning(GatedMLP):
    """Previous-step logits -> soft embeddings -> gated MLP, added to the canvas embeddings, then normed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_activation)
        self.pre_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, with_scale=False)

    def forward(self, canvas_embeds: Tensor, soft_embeds: Tensor | None) -> Tensor:
        # With no signal the MLP sees zeros and outputs exactly zero, so it is skipped.
        if soft_embeds is not None:
            canvas_embeds = canvas_embeds + super().forward(self.pre_norm(soft_embeds))
        return self.post_norm(canvas_embeds)


class Rotary:
    """cos/sin tables per layer kind, computed in fp32 once and extended on demand."""

    def __init__(self, specs: list[LayerSpec]):
        self.inv_freq: dict[str, Tensor] = {}
        for spec in specs:
            if spec.kind in self.inv_freq:
                continue
            half = spec.head_dim // 2
            rotated = int(spec.rotary_fraction * spec.head_dim // 2)
            exponents = torch.arange(0, 2 * rotated, 2, dtype=torch.int64).float() / spec.head_dim
            inv = 1.0 / spec.rope_theta ** exponents
            # Proportional RoPE: the remaining frequency pairs do not rotate (zero frequency).
            self.inv_freq[spec.kind] = torch.cat((inv, torch.zeros(half - rotated))) / spec.rope_factor
        self.tables: dict[tuple[str, torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def __call__(self, kind: str, start: int, length: int, device: torch.device,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (kind, device, dtype)
        table = self.tables.get(key)
        if table is None or table[0].shape[0] < start + length:
            size = max(2 * (start + length), 512)
            with torch.inference_mode(False):  # kept for later passes, which may train (as `_scalar`'s)
                freqs = torch.arange(size, device=device).float()[:, None] * self.inv_freq[kind].to(device)
                emb = torch.cat((freqs, freqs), dim=-1)
                sin = emb.sin()
                signed_sin = torch.cat((-sin[:, : sin.shape[1] // 2], sin[:, sin.shape[1] // 2:]), dim=-1)
                table = (emb.cos().to(dtype), signed_sin.to(dtype))
            self.tables[key] = table
        # [T, 1, head_dim]: broadcasts over [B, T, heads, head_dim]; the sin half is sign-flipped (apply_rope)
        return table[0][start:start + length, None], table[1][start:start + length, None]


# ---------------------------------------------------------------------------------------------- model
class DiffusionGemma(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config, spec) for spec in config.layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_conditioning = SelfConditioning(config)
        self.rotary = Rotary(config.layers)
        self.window = config.attention_window
        self.tokenizer = None  # a `tokenizers.Tokenizer` when the checkpoint ships tokenizer.json
        self.generation_config = None  # a `SamplingConfig` when it ships generation_config.json
        self.source = None  # the directory it was loaded from
        self._embed_scales: dict[torch.dtype, float] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def embed(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.embed_tokens.weight) * self._embed_scale()

    def _embed_scale(self) -> float:
        """sqrt(hidden) rounded to the weight dtype, as transformers does (55.4256 becomes 55.5 in bf16)."""
        scale = self._embed_scales.get(self.dtype)
        if scale is None:  # once per dtype: a tensor round trip every pass costs more than the embedding
            scale = self._embed_scales[self.dtype] = torch.tensor(self.config.embed_scale, dtype=self.dtype).item()
        return scale

    def logits(self, hidden: Tensor) -> Tensor:
        """Tied LM head on final-normed hidden states; fp32 and softcapped."""
        cap = self.config.final_logit_softcapping
        return torch.tanh(F.linear(hidden, self.embed_tokens.weight).float() / cap) * cap

    def init_weights(self, seed: int | None = None) -> None:
        """Fresh weights for training from scratch (normal(0, initializer_range), norms and scales at one)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                else:
                    p.fill_(1.0)
        for layer in self.layers:
            layer.encoder_scalar.fill_(1.0)
            layer.decoder_scalar.fill_(1.0)

    # ------------------------------------------------------------------ encoder
    def encode(self, input_ids: Tensor, cache: KVCache | None = None, attention_mask: Tensor | None = None) -> KVCache:
        """Run the causal encoder over `input_ids` [B, T], appending their keys/values to `cache`."""
        check_token_ids(input_ids, "input_ids", cache, self.config.vocab_size)
        return self._encode(input_ids, cache, attention_mask, want_logits=False)[0]

    def encode_logits(self, input_ids: Tensor, cache: KVCache | None = None, attention_mask: Tensor | None = None,
                      keep_full: bool = False) -> tuple[KVCache, Tensor]:
        """`encode` plus next-token logits [B, T, V] (autoregressive decoding and the encoder's training loss).

        `keep_full` keeps every token in the sliding layers too, so that the cache can later be truncated to
        a prefix (training encodes prompt + clean answer once, then lets the decoder see only the prompt)."""
        return self._encode(input_ids, cache, attention_mask, want_logits=True, evict=not keep_full)

    def _encode(self, ids: Tensor, cache: KVCache | None, attention_mask: Tensor | None,
                want_logits: bool, evict: bool = True) -> tuple[KVCache, Tensor | None]:
        check_token_ids(ids, "input_ids", cache)
        b, t = ids.shape
        if attention_mask is not None and tuple(attention_mask.shape) != (b, t):
            raise ValueError(f"attention_mask must be [batch, length] = {[b, t]}, the shape of the ids it masks, "
                             f"got {list(attention_mask.shape)}")
        past = 0 if cache is None else cache.length
        valid = _extend_valid(cache, attention_mask, b, t, ids.device)
        x = self.embed(ids)
        masks = self._encoder_masks(cache, t, valid, x.device)
        keys, values = [], []
        for i, (layer, spec) in enumerate(zip(self.layers, self.config.layers)):
            cos, sin = self.rotary(spec.kind, past, t, x.device, x.dtype)
            past_k = None if cache is None else cache.keys[i]
            past_v = None if cache is None else cache.values[i]
            x, k, v = layer(x, cos, sin, past_k, past_v, masks[spec.kind], layer.encoder_scalar)
            if spec.is_sliding and evict:
                k, v = k[:, :, -(self.window - 1):], v[:, :, -(self.window - 1):]
            keys.append(k)
            values.append(v)
        new_cache = KVCache(tuple(keys), tuple(values), past + t, valid)
        return new_cache, (self.logits(self.norm(x)) if want_logits else None)

    def _encoder_masks(self, cache: KVCache | None, t: int, valid: Tensor | None, device: torch.device) -> dict:
        """Boolean masks [B|1, 1, t, keys] per layer kind, over absolute positions."""
        past = 0 if cache is None else cache.length
        q = torch.arange(past, past + t, device=device)[:, None]
        masks = {}
        for kind in set(self.config.layer_types):
            layer = self.config.layer_types.index(kind)
            first = past - (0 if cache is None else cache.keys[layer].shape[2])  # oldest stored position
            k = torch.arange(first, past + t, device=device)[None, :]
            if self.config.encoder_is_causal:
                allowed = k <= q
                if kind != FULL:
                    allowed = allowed & (q - k < self.window)
            else:
                allowed = torch.ones_like(k <= q) if kind == FULL else (q - k).abs() < self.window
            allowed = allowed[None, None]
            if valid is not None:
                # Padding keys are hidden; a padding query still sees itself so its row is never empty.
                allowed = (allowed & valid[:, None, None, first:]) | (k == q)[None, None]
            masks[kind] = allowed
        return masks

    # ------------------------------------------------------------------ decoder
    def denoise(self, canvas_ids: Tensor, cache: KVCache, self_conditioning_logits: Tensor | None = None,
                self_conditioning_mask: Tensor | None = None) -> Tensor:
        """Bidirectional decoder over `[cache ; canvas]`. Returns fp32 softcapped logits [B, L, V].

        `self_conditioning_logits` are the previous pass's (processed) logits; `self_conditioning_mask` [B]
        switches the signal off per row (training)."""
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be the KVCache that encode returns, got {type(cache).__name__}")
        check_token_ids(canvas_ids, "canvas_ids", cache)
        b, length = canvas_ids.shape
        if self_conditioning_logits is not None and self_conditioning_logits.shape != (b, length,
                                                                                        self.config.vocab_size):
            raise ValueError(f"self_conditioning_logits must be [batch, length, vocab] = "
                             f"{[b, length, self.config.vocab_size]}, got {list(self_conditioning_logits.shape)}")
        if self_conditioning_mask is not None and (not isinstance(self_conditioning_mask, Tensor)
                                                   or self_conditioning_mask.shape != (b,)):
            raise ValueError(f"self_conditioning_mask must be a tensor [batch] = [{b}], one flag per row, got "
                             f"{list(getattr(self_conditioning_mask, 'shape', [])) or self_conditioning_mask!r}")
        x = self.embed(canvas_ids)
        soft = None
        if self_conditioning_logits is not None:
            w = self.embed_tokens.weight
            probs = torch.softmax(self_conditioning_logits, dim=-1, dtype=torch.float32).to(w.dtype)
            soft = (probs @ w) * self._embed_scale()
            if self_conditioning_mask is not None:
                soft = soft * self_conditioning_mask.to(soft.dtype)[:, None, None]
        x = self.self_conditioning(x, soft)
        masks: dict[int, Tensor] = {}  # by the number of cached keys (sliding layers keep fewer)
        for i, (layer, spec) in enumerate(zip(self.layers, self.config.layers)):
            cos, sin = self.rotary(spec.kind, cache.length, length, x.device, x.dtype)
            mask = None
            if cache.valid is not None:
                stored = cache.keys[i].shape[2]
                if stored not in masks:
                    keys_valid = torch.cat((cache.valid[:, cache.length - stored:],
                                            cache.valid.new_ones(b, length)), dim=1)
                    masks[stored] = keys_valid[:, None, None, :]
                mask = masks[stored]
            x, _, _ = layer(x, cos, sin, cache.keys[i], cache.values[i], mask, layer.decoder_scalar)
        return self.logits(self.norm(x))

    def compile_denoiser(self) -> None:
        """Replace `denoise` with a `torch.compile`d version: the decoder pass becomes a few fused kernels, which
        for small task models (where per-op overhead dominates) is several times faster. The first call for a
        new shape compiles (seconds to a minute), so it pays off on long runs: benchmarks, many puzzles.
        Where compilation fails (e.g. no C++ compiler for CPU kernels) it warns once and stays eager."""
        self._compile_method("denoise")

    def compile_encoder(self) -> None:
        """`compile_denoiser` for the encoder pass (`encode`, `encode_logits`): worth it in training, where every
        step encodes a full batch; sampling encodes each prompt once."""
        self._compile_method("_encode")

    def _compile_method(self, name: str) -> None:
        if name in self.__dict__:  # already compiled
            return
        self._embed_scale()  # cached now: its first computation (.item()) would break the compiled graph
        eager = getattr(self, name)
        compiled = torch.compile(eager)

        def run(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                warnings.warn(f"torch.compile failed, running {name} eagerly: {str(exc).splitlines()[0]}",
                              stacklevel=2)
                self.__dict__.pop(name, None)
                return eager(*args, **kwargs)

        setattr(self, name, run)

    @property
    def is_compiled(self) -> bool:
        """Whether `compile_denoiser` or `compile_encoder` replaced a pass."""
        return "denoise" in self.__dict__ or "_encode" in self.__dict__

    def drop_compiled(self) -> None:
        """Back to the eager passes (undoes `compile_denoiser` and `compile_encoder`)."""
        for name in ("denoise", "_encode"):
            self.__dict__.pop(name, None)

    def __getstate__(self) -> dict:
        """A copy or a pickle runs the eager passes: a compiled pass is a closure over this model's weights (a
        deep copy would compute with the original's) and does not pickle; compile the copy again if wanted."""
        state = self.__dict__.copy()
        for name in ("denoise", "_encode"):
            state.pop(name, None)
        return state

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, dtype: torch.dtype | str = "auto",
                        device: str | torch.device = "cpu") -> DiffusionGemma:
        """`load_model` under the name Hugging Face users reach for: the same arguments, the same model."""
        from .checkpoint import load_model  # checkpoint imports this module

        return load_model(path_or_id, dtype=dtype, device=device)

    def save_pretrained(self, path: str | os.PathLike, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write config.json, model.safetensors (sharded above `max_shard_bytes`) and generation_config.json."""
        from .checkpoint import save_model

        save_model(self, path, max_shard_bytes=max_shard_bytes)


def check_token_ids(ids: Tensor, name: str, cache: KVCache | None = None, vocab_size: int | None = None) -> None:
    """Token ids as the model takes them: an integer tensor [batch, length], one row per row of `cache`, and
    (when `vocab_size` is given: a reduction, so `encode` checks it but not every denoising pass) in range."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch tensor of token ids, got {type(ids).__name__}")
    if ids.dim() != 2 or 0 in ids.shape:
        raise ValueError(f"{name} must be [batch, length] with at least one row and one token, got shape "
                         f"{list(ids.shape)}")
    if ids.dtype not in (torch.long, torch.int32):
        raise TypeError(f"{name} must hold integer token ids (torch.long or torch.int32), got {ids.dtype}")
    if cache is not None and cache.batch_size != ids.shape[0]:
        raise ValueError(f"{name} has {ids.shape[0]} rows but the cache holds {cache.batch_size}")
    if vocab_size is not None and not 0 <= int(ids.min()) <= int(ids.max()) < vocab_size:
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise ValueError(f"{name} holds token id {int(bad)}, outside the vocabulary of {vocab_size} tokens")


def _extend_valid(cache: KVCache | None, attention_mask: Tensor | None, b: int, t: int,
                  device: torch.device) -> Tensor | None:
    if attention_mask is None and (cache is None or cache.valid is None):
        return None
    old = None if cache is None else cache.valid
    if old is None and cache is not None:
        old = torch.ones(b, cache.length, dtype=torch.bool, device=device)
    new = torch.ones(b, t, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
    return new if old is None else torch.cat((old, new), dim=1)
