"""The engine: DiffusionGemma text model, checkpoint I/O, sampler, training objective."""

from . import arguments
from .checkpoint import (CheckpointError, CheckpointHeader, check_device, load_model, new_model, read_header,
                         resolve_checkpoint, save_model, weights_digest)
from .config import ConfigError, LayerSpec, ModelConfig
from .ctrl_c import CtrlC, quiet_worker
from .files import files_digest, write_atomically
from .guidance import Guidance, Pins
from .model import DiffusionGemma, KVCache
from .progress import progress_bar
from .sampler import (
    FinishClock,
    GenerationOutput,
    SamplingConfig,
    StepCallback,
    StepInfo,
    child_generator,
    denoise_canvas,
    generate,
    generate_autoregressive,
    guided_config,
    one_canvas,
    released_config,
)
from .tokenizer import load_tokenizer, word_level_tokenizer

__all__ = [
    "CheckpointError", "CheckpointHeader", "ConfigError", "CtrlC", "DiffusionGemma", "FinishClock",
    "GenerationOutput", "Guidance",
    "KVCache", "LayerSpec", "ModelConfig", "Pins", "SamplingConfig", "StepCallback", "StepInfo", "arguments",
    "check_device", "child_generator", "denoise_canvas", "generate", "generate_autoregressive", "guided_config",
    "load_model", "load_tokenizer", "new_model", "one_canvas", "progress_bar", "quiet_worker", "read_header",
    "released_config",
    "resolve_checkpoint", "save_model", "files_digest", "weights_digest", "word_level_tokenizer", "write_atomically",
]
