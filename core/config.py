"""Model configuration, read from and written to the Hugging Face `config.json` of DiffusionGemma.

Only the text path is modelled. Geometry that differs per layer (the full-attention layers of the release
use a larger head and fewer KV heads) is resolved once into `LayerSpec`s, so the model never re-derives it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

SLIDING = "sliding_attention"
FULL = "full_attention"
ROPE_TYPES = ("default", "proportional")
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")
DEFAULT_ROPE = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
DEFAULT_GLOBAL_HEAD_DIM = 512
# Geometry has no safe default: a checkpoint that omits it is broken, not small.
REQUIRED_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "num_experts", "top_k_experts", "moe_intermediate_size",
)


class ConfigError(ValueError):
    """A `config.json` that cannot describe a DiffusionGemma text model."""


@dataclass(frozen=True)
class LayerSpec:
    """Attention geometry of one layer of the shared stack."""

    kind: str  # SLIDING or FULL
    head_dim: int
    num_kv_heads: int
    rope_theta: float
    rotary_fraction: float  # fraction of frequency pairs that rotate (1.0 for default RoPE)
    rope_factor: float = 1.0  # proportional RoPE divides every frequency by it (default RoPE ignores it)

    @property
    def is_sliding(self) -> bool:
        return self.kind == SLIDING

    @property
    def has_v_proj(self) -> bool:
        # Full-attention layers reuse the raw key projection as values.
        return self.is_sliding


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    layer_types: list[str] = field(default_factory=list)
    rope_parameters: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_ROPE))
    per_layer_overrides: dict[int, dict[str, int]] = field(default_factory=dict)
    sliding_window: int = 512  # as written in config.json
    use_bidirectional_attention: str | None = None
    rms_norm_eps: float = 1e-6
    hidden_activation: str = "gelu_pytorch_tanh"
    attention_bias: bool = False
    final_logit_softcapping: float = 30.0
    max_position_embeddings: int = 131_072
    canvas_length: int = 256
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    bos_token_id: int | None = 2
    initializer_range: float = 0.02
    # Fields we carry through unchanged on save (token ids of the multimodal wrapper).
    passthrough: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_counts()  # before num_layers sizes the default layer types
        self.layer_types = _last_layer_full(self.layer_types or default_layer_types(self.num_layers))
        self.validate()
        self.layers = [self._layer_spec(i) for i in range(self.num_layers)]

    # ------------------------------------------------------------------ derived
    @property
    def encoder_is_causal(self) -> bool:
        return self.use_bidirectional_attention != "all"

    @property
    def attention_window(self) -> int:
        """The window the attention code uses (transformers halves it for all-bidirectional models)."""
        if self.use_bidirectional_attention == "all":
            return self.sliding_window // 2 + 1
        return self.sliding_window

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.hidden_size)

    def _layer_spec(self, idx: int) -> LayerSpec:
        kind = self.layer_types[idx]
        override = self.per_layer_overrides.get(idx, {})
        rope = self.rope_parameters[kind]
        fraction = float(rope.get("partial_rotary_factor", 1.0))
        return LayerSpec(
            kind=kind,
            head_dim=int(override.get("head_dim", self.head_dim)),
            num_kv_heads=int(override.get("num_key_value_heads", self.num_kv_heads)),
            rope_theta=float(rope["rope_theta"]),
            rotary_fraction=fraction,
            rope_factor=float(rope.get("factor", 1.0)) if rope.get("rope_type") == "proportional" else 1.0,
        )

    def _check_counts(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "num_experts", "top_k_experts", "moe_intermediate_size",
                     "canvas_length", "sliding_window", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                where = name if name == "canvas_length" else f"text_config.{_hf_name(name)}"  # top level in the file
                raise ConfigError(f"{where}: must be a positive integer, got {value!r}")
        if self.sliding_window < 2:  # a window of 1 would keep no earlier key: its cache slice [-0:] keeps them all
            raise ConfigError(f"text_config.sliding_window: must be at least 2, got {self.sliding_window}")

    def validate(self) -> None:
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"text_config.{name}: {msg}")

        self._check_counts()
        need(len(self.layer_types) == self.num_layers, "layer_types",
             f"has {len(self.layer_types)} entries but num_hidden_layers is {self.num_layers}")
        for i, kind in enumerate(self.layer_types):
            need(kind in (SLIDING, FULL), "layer_types", f"entry {i} is {kind!r}; expected {SLIDING!r} or {FULL!r}")
        for kind in set(self.layer_types):
            need(kind in self.rope_parameters, "rope_parameters", f"has no entry for {kind!r}")
            rope = self.rope_parameters[kind]
            need(rope.get("rope_type", "default") in ROPE_TYPES, "rope_parameters",
                 f"{kind}.rope_type {rope.get('rope_type')!r} is not one of {ROPE_TYPES}")
            need("rope_theta" in rope, "rope_parameters", f"{kind} has no rope_theta")
            theta = rope["rope_theta"]
            need(isinstance(theta, (int, float)) and not isinstance(theta, bool) and 0 < theta < math.inf,
                 "rope_parameters", f"{kind}.rope_theta must be a positive number, got {theta!r}")
            fraction = rope.get("partial_rotary_factor", 1.0)
            need(0.0 < fraction <= 1.0, "rope_parameters", f"{kind}.partial_rotary_factor must be in (0, 1]")
            need(rope.get("rope_type", "default") == "proportional" or fraction == 1.0, "rope_parameters",
                 f"{kind}: partial_rotary_factor needs rope_type 'proportional'")
            factor = rope.get("factor", 1.0)
            need(isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor < math.inf,
                 "rope_parameters", f"{kind}.factor must be a positive number, got {factor!r}")
        for idx, override in self.per_layer_overrides.items():
            need(0 <= idx < self.num_layers, "per_layer_config", f"layer {idx} does not exist")
            unknown = set(override) - {"head_dim", "num_key_value_heads"}
            need(not unknown, "per_layer_config", f"layer {idx} overrides unsupported fields {sorted(unknown)}")
            for name, value in override.items():
                need(isinstance(value, int) and not isinstance(value, bool), "per_layer_config",
                     f"layer {idx}: {name} must be an integer, got {value!r}")
        for idx in range(self.num_layers):
            override = self.per_layer_overrides.get(idx, {})
            kv = int(override.get("num_key_value_heads", self.num_kv_heads))
            need(kv > 0, "num_key_value_heads", f"layer {idx}: must be positive, got {kv}")
            need(int(override.get("head_dim", self.head_dim)) > 0, "head_dim", f"layer {idx}: must be positive")
            need(self.num_heads % kv == 0, "num_attention_heads",
                 f"{self.num_heads} is not a multiple of layer {idx}'s {kv} key/value heads")
            need(int(override.get("head_dim", self.head_dim)) % 2 == 0, "head_dim", f"layer {idx}: must be even")
        for name in ("rms_norm_eps", "final_logit_softcapping"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf, name,
                 f"must be a positive number, got {value!r}")
        need(self.canvas_length <= self.max_position_embeddings, "max_position_embeddings",
             f"{self.max_position_embeddings} is shorter than canvas_length {self.canvas_length}")
        need(self.top_k_experts <= self.num_experts, "top_k_experts",
             f"{self.top_k_experts} exceeds num_experts {self.num_experts}")
        need(self.use_bidirectional_attention in (None, "vision", "all"), "use_bidirectional_attention",
             f"{self.use_bidirectional_attention!r} is not one of None, 'vision', 'all'")
        need(self.hidden_activation in ACTIVATIONS, "hidden_activation",
             f"{self.hidden_activation!r} is not one of {ACTIVATIONS}")
        # transformers ties encoder and decoder weights but not biases; no released model uses them.
        need(not self.attention_bias, "attention_bias", "attention biases are not supported")
        for name in ("pad_token_id", "eos_token_id", "bos_token_id"):  # written back by save_pretrained as read
            ids = getattr(self, name)
            ids = ids if isinstance(ids, list) and name == "eos_token_id" else [ids]  # as JSON holds them
            need(ids == [None] or ids and all(isinstance(i, int) and not isinstance(i, bool)
                                              and 0 <= i < self.vocab_size for i in ids), name,
                 f"must be a token id below vocab_size {self.vocab_size}"
                 f"{' (or a list of them)' if name == 'eos_token_id' else ''}, got {getattr(self, name)!r}")

    # ------------------------------------------------------------- HF mapping
    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> "ModelConfig":
        if not isinstance(cfg, dict):
            raise ConfigError(f"expected a JSON object, got {type(cfg).__name__}")
        if cfg.get("model_type") != "diffusion_gemma":
            raise ConfigError(f"model_type: expected 'diffusion_gemma', got {cfg.get('model_type')!r}")
        text = cfg.get("text_config")
        if not isinstance(text, dict):
            raise ConfigError("text_config: missing (a DiffusionGemma config nests the text model in text_config)")
        missing = [name for name in REQUIRED_TEXT_FIELDS if name not in text]
        if missing:
            raise ConfigError(f"text_config is missing required field(s): {', '.join(missing)}")
        for name in REQUIRED_TEXT_FIELDS:  # all counts: 30.0 or "30" would fail later, far from the cause
            if isinstance(text[name], bool) or not isinstance(text[name], int):
                raise ConfigError(f"text_config.{name}: must be a positive integer, got {text[name]!r}")
        tied = [text.get("tie_word_embeddings", True), cfg.get("tie_word_embeddings", True)]
        if odd := [value for value in tied if not isinstance(value, bool)]:  # "false" would read as true
            raise ConfigError(f"tie_word_embeddings must be true or false, got {odd[0]!r}")
        if False in tied:
            raise ConfigError("tie_word_embeddings: untied lm_head is not supported (DiffusionGemma ties it)")

        if not isinstance(text.get("layer_types") or [], list):
            raise ConfigError(f"text_config.layer_types: must be a list, got {text['layer_types']!r}")
        layer_types = list(text.get("layer_types") or [])
        num_layers = text["num_hidden_layers"]
        # the last layer made full before the full-attention geometry is derived, as transformers does
        layer_types = _last_layer_full(layer_types or default_layer_types(num_layers))
        overrides = _per_layer_overrides(text, layer_types)
        rope = text.get("rope_parameters") or dict(DEFAULT_ROPE)
        # not vision_config: we never write vision weights, so a saved copy of the 26B model declaring its full
        # vision tower would have transformers build and randomly initialise it; the tiny stand-in goes instead
        passthrough = {k: cfg[k] for k in ("boi_token_id", "eoi_token_id", "image_token_id") if k in cfg}
        if "text_config" in cfg:  # the wrapper's own token ids (the released model's eos_token_id [1, 106])
            passthrough.update({k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg})
        default = {f.name: f.default for f in fields(cls)}  # what a key config.json leaves out takes
        return cls(
            vocab_size=text["vocab_size"],
            hidden_size=text["hidden_size"],
            intermediate_size=text["intermediate_size"],
            num_layers=num_layers,
            num_heads=text["num_attention_heads"],
            num_kv_heads=text["num_key_value_heads"],
            head_dim=text["head_dim"],
            num_experts=text["num_experts"],
            top_k_experts=text["top_k_experts"],
            moe_intermediate_size=text["moe_intermediate_size"],
            layer_types=layer_types,
            rope_parameters={k: dict(v) for k, v in rope.items()},
            per_layer_overrides=overrides,
            sliding_window=text.get("sliding_window", default["sliding_window"]),
            use_bidirectional_attention=text.get("use_bidirectional_attention"),
            rms_norm_eps=_number(text, "rms_norm_eps", default["rms_norm_eps"]),
            hidden_activation=text.get("hidden_activation", default["hidden_activation"]),
            attention_bias=bool(text.get("attention_bias", default["attention_bias"])),
            # transformers: null fails
            final_logit_softcapping=_number(text, "final_logit_softcapping", default["final_logit_softcapping"]),
            max_position_embeddings=text.get("max_position_embeddings", default["max_position_embeddings"]),
            canvas_length=cfg.get("canvas_length", default["canvas_length"]),
            pad_token_id=text.get("pad_token_id", default["pad_token_id"]),
            eos_token_id=text.get("eos_token_id", default["eos_token_id"]),
            bos_token_id=text.get("bos_token_id", default["bos_token_id"]),
            initializer_range=_number(cfg, "initializer_range",
                                      _number(text, "initializer_range", default["initializer_range"])),
            passthrough=passthrough,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        text = {
            "model_type": "diffusion_gemma_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "num_experts": self.num_experts,
            "top_k_experts": self.top_k_experts,
            "moe_intermediate_size": self.moe_intermediate_size,
            "layer_types": list(self.layer_types),
            "rope_parameters": self.rope_parameters,
            "per_layer_config": {str(i): dict(o) for i, o in sorted(self.per_layer_overrides.items())},
            "attention_k_eq_v": True,
            "sliding_window": self.sliding_window,
            "use_bidirectional_attention": self.use_bidirectional_attention,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_activation": self.hidden_activation,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "final_logit_softcapping": self.final_logit_softcapping,
            "max_position_embeddings": self.max_position_embeddings,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "tie_word_embeddings": True,
            "initializer_range": self.initializer_range,
        }
        out = {
            "architectures": ["DiffusionGemmaForBlockDiffusion"],
            "model_type": "diffusion_gemma",
            "canvas_length": self.canvas_length,
            "tie_word_embeddings": True,
            "initializer_range": self.initializer_range,
            "text_config": text,
            "vision_config": TINY_VISION_CONFIG,
        }
        out.update(self.passthrough)
        return out


def _number(fields: dict[str, Any], name: str, default: float) -> float:
    value = fields.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: must be a number, got {value!r}")
    return float(value)


# transformers always builds a vision tower; a checkpoint without one gets this tiny stand-in so that
# loading it there allocates almost nothing. Its weights are not in our files: transformers initialises them.
TINY_VISION_CONFIG = {
    "model_type": "gemma4_vision",
    "hidden_size": 8,
    "intermediate_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "patch_size": 4,
    "pooling_kernel_size": 1,
    "position_embedding_size": 8,
}

_HF_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
             "num_kv_heads": "num_key_value_heads"}


def default_layer_types(num_layers: int) -> list[str]:
    """transformers' default: five sliding-window layers to one full-attention layer, the last one full."""
    return [SLIDING if (i + 1) % 6 and i + 1 < num_layers else FULL for i in range(num_layers)]


def _last_layer_full(layer_types: list[str]) -> list[str]:
    if layer_types and layer_types[-1] != FULL:
        log.warning("last layer must use full_attention (got %s); forcing it, as transformers does", layer_types[-1])
        return [*layer_types[:-1], FULL]
    return layer_types


def _hf_name(name: str) -> str:
    return _HF_NAMES.get(name, name)


def _per_layer_overrides(text: dict[str, Any], layer_types: list[str]) -> dict[int, dict[str, int]]:
    """Full-attention geometry: explicit `per_layer_config`, else `global_head_dim`/`num_global_key_value_heads`."""
    if "per_layer_config" in text and text["per_layer_config"] is not None:
        raw = text["per_layer_config"]
        if not isinstance(raw, dict):
            raise ConfigError("text_config.per_layer_config: must map layer index to overrides")
        try:
            return {int(k): dict(v) for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"text_config.per_layer_config: keys must be layer indices ({exc})") from None
    override: dict[str, int] = {"head_dim": text.get("global_head_dim", DEFAULT_GLOBAL_HEAD_DIM)}
    if text.get("num_global_key_value_heads") is not None:
        override["num_key_value_heads"] = text["num_global_key_value_heads"]
    return {i: dict(override) for i, kind in enumerate(layer_types) if kind == FULL}
