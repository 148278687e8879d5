"""Checkpoint I/O in the Hugging Face layout, safetensors only (nothing is ever unpickled).

Tensor names are those transformers writes for `DiffusionGemmaForBlockDiffusion`: shared weights under
`model.decoder.*`, plus the encoder's own `model.encoder.language_model.layers.N.layer_scalar`. Files written
here load in transformers and give the same logits; files written by transformers load here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import arguments
from .config import ConfigError, ModelConfig
from .files import files_digest, write_atomically
from .model import DiffusionGemma

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

DECODER = "model.decoder."
ENCODER = "model.encoder.language_model."
VISION_PREFIXES = ("model.encoder.vision_tower.", "model.encoder.embed_vision.")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
DTYPE_NAMES = {f"{dtype}".removeprefix("torch."): dtype for dtype in COMPUTE_DTYPES}  # 'bfloat16': torch.bfloat16
STORED_FLOATS = ("F32", "BF16", "F16", "F64")  # safetensors' names of the dtypes weights may be stored in


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or does not match its config."""


# ------------------------------------------------------------------------------------------ naming
_SCALAR = re.compile(r"layers\.(\d+)\.(encoder|decoder)_scalar$")


def hf_name(name: str) -> str:
    """Our parameter/buffer name -> checkpoint tensor name."""
    m = _SCALAR.search(name)
    if m:
        prefix = ENCODER if m.group(2) == "encoder" else DECODER
        return f"{prefix}layers.{m.group(1)}.layer_scalar"
    return DECODER + name


def our_name(tensor_name: str) -> str | None:
    """Checkpoint tensor name -> our name; None for tensors we do not model (vision tower)."""
    if tensor_name.startswith(VISION_PREFIXES):
        return None
    if tensor_name == "lm_head.weight":
        return "embed_tokens.weight"  # tied
    m = re.fullmatch(r"model\.(decoder|encoder\.language_model)\.layers\.(\d+)\.layer_scalar", tensor_name)
    if m:
        side = "decoder" if m.group(1) == "decoder" else "encoder"
        return f"layers.{m.group(2)}.{side}_scalar"
    for prefix in (DECODER, ENCODER):
        if tensor_name.startswith(prefix):
            return tensor_name[len(prefix):]
    return tensor_name  # unknown: reported as unexpected


def _state(model: DiffusionGemma) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


# ------------------------------------------------------------------------------------------ resolve
def _shipped_checkpoint(text: str) -> Path | None:
    """`models/NAME` where no such folder is here (an installed wheel, run from any folder): the checkpoint
    shipped inside the package, never a Hub repository of an owner called 'models' (CheckpointError for a name
    not shipped)."""
    parts = Path(text).parts  # 'models/sudoku/' too, and 'models\\sudoku' on Windows
    if len(parts) != 2 or parts[0] != "models" or Path("models").is_dir():
        return None
    name = parts[1]
    from .. import models

    folder = Path(models.__file__).parent / name
    if (folder / "config.json").is_file():
        return folder
    names = sorted(p.parent.name for p in Path(models.__file__).parent.glob("*/config.json"))
    raise CheckpointError(f"{text}: no such directory, nor a checkpoint shipped with diffsolve ({', '.join(names)}: "
                          "models/NAME loads one from any folder)")


def resolve_checkpoint(path_or_id: str | os.PathLike) -> Path:
    """A local directory, or a hub id resolved through the local Hugging Face cache (works offline)."""
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a directory path or a hub id 'owner/name', got {path_or_id!r}")
    if not str(path_or_id).strip():
        raise CheckpointError("empty checkpoint path: give a checkpoint directory or a hub id 'owner/name'")
    try:
        path = Path(path_or_id).expanduser()
    except RuntimeError:  # '~user/x' for a user this machine does not have
        path = Path(path_or_id)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory, found a file")
    repo_id = path_or_id if isinstance(path_or_id, str) else PurePath(path_or_id).as_posix()  # Windows: '\\'
    if (shipped := _shipped_checkpoint(repo_id)) is not None:
        return shipped
    # './name' or '../x' is a relative path, never a hub id (owners do not start with a dot)
    if not re.fullmatch(r"[\w\-][\w.\-]*/[\w.\-]+", repo_id) or repo_id.endswith(("/.", "/..")):
        raise CheckpointError(f"{repo_id}: no such directory, and not a hub id of the form 'owner/name'")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.md"]
    cached = None
    try:  # the cache first: no network call when the checkpoint is there
        cached = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        if (cached / "config.json").is_file() and _weights_complete(cached):
            return cached
        # else a download cut short, or a model kept as pickles: finished below where the Hub may be asked
    except Exception:
        pass
    partial = cached is not None
    absent = (f"{repo_id}: no such local directory, and "
              + ("only partly downloaded in" if partial else "not in") + " the Hugging Face cache")
    owner = Path(repo_id.split("/")[0])
    offline = constants.HF_HUB_OFFLINE or _offline_now()
    if partial and (offline or owner.is_dir()) and (pickles := _pickle_weights(cached)):
        raise CheckpointError(f"{repo_id}: only pickle weights found in the Hugging Face cache ({cached}: "
                              f"{_first_five(pickles)}); diffsolve loads safetensors only (should the repository "
                              f"have safetensors weights too, `hf download {repo_id}` where there is a network)")
    if owner.is_dir():  # 'runs/sudoku' typed in the wrong folder must not fetch a stranger's 'runs' repository
        raise CheckpointError(f"{absent}. Not looked up on the Hub: {owner}/ is a folder here, so this may be a "
                              f"mistyped path (run from another folder, or `hf download {repo_id}` first)")
    how = (f"Download it once where there is a network (`hf download {repo_id}`, or `huggingface-cli download` with "
           "older huggingface_hub) or pass the path of a local checkpoint directory.")
    if offline:
        raise CheckpointError(f"{absent} (offline mode: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE). {how}")
    log.warning("%s: %s from the Hugging Face Hub", repo_id,
                "finishing its download" if partial else "not in the Hugging Face cache; downloading it")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except GatedRepoError:  # before its parent class: Gemma releases are gated
        raise CheckpointError(f"{repo_id}: a gated repository on the Hugging Face Hub: accept its terms on "
                              f"https://huggingface.co/{repo_id} and log in with a token that has access "
                              "(`hf auth login`; older huggingface_hub: `huggingface-cli login`)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such local directory, and no such model repository on the Hugging "
                              "Face Hub (or a private one: log in with `hf auth login`, or `huggingface-cli login` "
                              "with older huggingface_hub)") from None
    except Exception as exc:  # no network, a timeout: the same to the caller
        raise CheckpointError(f"{absent}, and the Hub could not be reached ({type(exc).__name__}). {how}") from None


def _offline_now() -> bool:
    """Offline mode as the environment says it now: huggingface_hub reads it once, when first imported."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device this machine can use; a ValueError that names it otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device}: expected cpu, cuda or cuda:N"
                         + (" (Apple GPUs, mps, are not supported: use cpu)" * (str(device).startswith("mps"))))
    if parsed.type == "cpu":
        return torch.device("cpu")  # 'cpu:0' is the same CPU, but safetensors refuses an index on it
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: torch {torch.__version__} sees no CUDA device on this machine")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         "numbered from 0")
    # 'cuda' is the current GPU: named by its index, so that everything made for it lands on the same one
    return parsed if parsed.index is not None else torch.device("cuda", torch.cuda.current_device())


MAX_JSON_BYTES = 16 * 2**20  # a checkpoint's config and index are kilobytes; one of 100 MB takes gigabytes to parse


def _read_json(path: Path) -> object:
    """A checkpoint's JSON file (config, generation config, index), a CheckpointError naming it when it is too
    large, unreadable or not JSON."""
    try:
        if (size := path.stat().st_size) > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {size:,} bytes, more than a checkpoint's JSON file holds (at most "
                                  f"{MAX_JSON_BYTES:,})")
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply to read") from None
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, or not text
        raise CheckpointError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    except ValueError as exc:  # e.g. a number of more than 4,300 digits
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None


def _is_file(path: Path) -> bool:
    """Whether a checkpoint file is there; something else under its name (a folder, a device) is an error."""
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a folder or a device)")
    return path.exists()


def _read_config_json(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not _is_file(config_path):
        raise CheckpointError(f"{directory}: no config.json{_run_folder_hint(directory)}")
    return _read_json(config_path)


def _run_folder_hint(directory: Path) -> str:
    """Where a training run folder (`solve train --out`) keeps a loadable model, as a hint; '' for other folders."""
    for sub, what in (("model", "the finished model"), ("checkpoint", "the last training checkpoint")):
        if (directory / sub / "config.json").is_file():
            return f"; a training run folder? load {directory / sub} ({what})"
    return ""


def read_config(directory: Path, raw: object = None) -> ModelConfig:
    """The model a checkpoint's config.json describes (`raw`: its JSON, when already read). Values no model can
    use are the checkpoint's fault: a CheckpointError naming the file, as every other unusable checkpoint
    (ModelConfig itself raises ConfigError)."""
    config_path = directory / "config.json"
    raw = _read_config_json(directory) if raw is None else raw
    try:
        return ModelConfig.from_hf_dict(raw)
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    except (TypeError, ValueError, AttributeError, KeyError, ZeroDivisionError) as exc:  # e.g. "30" as a count
        raise CheckpointError(f"{config_path}: unusable value ({type(exc).__name__}: {exc})") from None


SAVE_KEY = "diffsolve_save"  # metadata naming the save_model call that wrote a shard and its index
SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def _index_save(directory: Path) -> str | None:
    """The save an index names (None for a single file, or an index written elsewhere)."""
    index = directory / INDEX_FILE
    if not index.is_file():
        return None
    metadata = _read_json(index).get("metadata")
    return metadata.get(SAVE_KEY) if isinstance(metadata, dict) else None


def _weights_complete(directory: Path) -> bool:
    """Whether `directory` holds its weights: model.safetensors, or every shard its index names (the index comes
    first in a download: one cut short leaves it without some of its 50 GB of shards)."""
    try:
        return bool(_shard_files(directory))
    except CheckpointError:
        return False


def _shard_files(directory: Path) -> list[Path]:
    """The weight files: model.safetensors when there is one (as transformers picks it over an index beside it),
    else the shards the index names."""
    single, index = directory / SINGLE_FILE, directory / INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = _read_json(index)["weight_map"]
            files = sorted(set(weight_map.values()))
            if not all(isinstance(f, str) for f in files):
                raise TypeError("weight_map values must be file names")
            if not files:
                raise ValueError("its weight_map names no shard")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise CheckpointError(f"{index}: not a usable shard index ({type(exc).__name__}: {exc}); save or "
                                  "download the checkpoint again") from None
        outside = [f for f in files if f != Path(f).name or f in ("", ".", "..")]
        if outside:  # a downloaded index must not load (or digest) files from elsewhere on the disk
            raise CheckpointError(f"{index}: names shard file(s) outside the checkpoint folder: "
                                  f"{', '.join(outside[:5])}; shards are plain file names beside the index")
        missing = [f for f in files if not _is_file(directory / f)]
        if missing:
            raise CheckpointError(f"{index}: shard file(s) missing: {', '.join(missing)}")
        return [directory / f for f in files]
    for path in (single, index):  # a folder under either name is said as such
        _is_file(path)
    if pickles := _pickle_weights(directory):
        raise CheckpointError(f"{directory}: only pickle weights found ({_first_five(pickles)}); diffsolve loads "
                              "safetensors only")
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}")


def _pickle_weights(directory: Path) -> list[str]:
    """The names of the pickle weight files in `directory` (pytorch_model.bin, *.pt): named in errors, never read."""
    return sorted(path.name for pattern in ("*.bin", "*.pt") for path in directory.glob(pattern))


def weights_digest(path_or_id: str | os.PathLike) -> str:
    """`files_digest` of a checkpoint's weight files (a local folder or a cached hub id): what results and files
    fitted to these weights (a molecule acceptance, a benchmark's JSON) record, so that they are not mixed with
    others'."""
    return files_digest(_shard_files(resolve_checkpoint(path_or_id)))


# ------------------------------------------------------------------------------------------ load
@dataclass
class _ShardReport:
    """What reading the shards found: the tensors (by our parameter names) and everything wrong with them."""

    loaded: dict[str, torch.Tensor] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    misshaped: dict[str, str] = field(default_factory=dict)  # our name -> what is wrong
    nonfinite: list[str] = field(default_factory=list)  # inf or NaN: damaged data under an intact header
    overflow: list[str] = field(default_factory=list)  # values the load dtype cannot hold
    read_as: dict[str, str] = field(default_factory=dict)  # our name -> the tensor name it was read from
    conflicting: list[str] = field(default_factory=list)  # a second copy of a tensor (lm_head.weight) that differs
    skipped_vision: int = 0

    def check(self, directory: Path, expected: dict, dtype: torch.dtype) -> None:
        """Raise CheckpointError naming every tensor missing, unexpected, mis-shaped, damaged or out of range."""
        missing = [hf_name(n) for n in expected if n not in self.loaded and n not in self.misshaped]
        if missing or self.unexpected or self.misshaped:
            problems = (("missing", missing), ("unexpected", self.unexpected),
                        ("mis-shaped or mistyped", list(self.misshaped.values())))
            parts = [f"{len(items)} {title}: " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else "")
                     for title, items in problems if items]
            raise CheckpointError(f"{directory}: checkpoint does not match config.json -- " + " | ".join(parts))
        if self.nonfinite:
            raise CheckpointError(f"{directory}: {len(self.nonfinite)} weight tensor(s) hold inf or NaN, the "
                                  f"checkpoint is damaged: {_first_five(self.nonfinite)}")
        if self.conflicting:  # which copy transformers would keep depends on its tying: refuse, never guess
            raise CheckpointError(f"{directory}: {len(self.conflicting)} pair(s) of copies of one weight hold "
                                  f"different values (DiffusionGemma ties lm_head to the embedding): "
                                  f"{_first_five(self.conflicting)}")
        if self.overflow:
            raise CheckpointError(f"{directory}: {len(self.overflow)} weight tensor(s) hold values {dtype} cannot "
                                  f"represent (load in the checkpoint's own dtype or float32): "
                                  f"{_first_five(self.overflow)}")


def _first_five(names: list[str]) -> str:
    return "; ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _read_shard(shard: Path, device, dtype: torch.dtype, expected: dict, report: _ShardReport,
                save: str | None = None) -> None:
    """Read one safetensors shard into `report`, converted to `dtype`. With `save` (the index's), the shard must
    come from that save."""
    with safe_open(str(shard), framework="pt", device=str(device)) as f:
        if save is not None and (f.metadata() or {}).get(SAVE_KEY) != save:
            raise CheckpointError(f"{shard}: written by another save than {INDEX_FILE} names (a save was cut "
                                  "short after replacing some shards); save the model again")
        for tensor_name in f.keys():
            name = our_name(tensor_name)
            if name is None:
                report.skipped_vision += 1
                continue
            if name not in expected:
                report.unexpected.append(tensor_name)
                continue
            if name in report.loaded:  # a tied alias (lm_head, encoder copy of a shared weight): the same values
                if not torch.equal(f.get_tensor(tensor_name).to(dtype=dtype), report.loaded[name]):
                    report.conflicting.append(f"{tensor_name} and {report.read_as[name]}")
                continue
            header = f.get_slice(tensor_name)  # shape and dtype from the header: nothing read yet
            shape, stored = tuple(header.get_shape()), header.get_dtype()
            if shape != tuple(expected[name].shape):
                report.misshaped[name] = (f"{tensor_name}: checkpoint {shape}, config expects "
                                          f"{tuple(expected[name].shape)}")
                continue
            if stored not in STORED_FLOATS:  # integers are not cast silently; float8 cannot be checked or computed
                report.misshaped[name] = (f"{tensor_name}: checkpoint dtype {stored}, expected one of "
                                          f"{', '.join(STORED_FLOATS)}")
                continue
            tensor = f.get_tensor(tensor_name)
            finite = bool(torch.isfinite(tensor).all())
            if not finite:
                report.nonfinite.append(tensor_name)
            # On the CPU in its own dtype a tensor stays a view of the mapped file; Windows then refuses to replace
            # the file (saving the model over its checkpoint): copied there.
            report.loaded[name] = tensor.to(dtype=dtype, copy=os.name == "nt")
            report.read_as[name] = tensor_name
            narrows = torch.finfo(dtype).max < torch.finfo(tensor.dtype).max
            if narrows and finite and not torch.isfinite(report.loaded[name]).all():
                report.overflow.append(tensor_name)


def load_model(path_or_id: str | os.PathLike, dtype: torch.dtype | str = "auto",
               device: str | torch.device = "cpu") -> DiffusionGemma:
    """Load a DiffusionGemma checkpoint (local directory or hub id) into our engine.

    Tensors are read shard by shard straight into `dtype` on `device`; the model is built on the meta
    device first, so peak memory is one copy of the weights plus one tensor. `dtype="auto"` (the default, as
    in transformers) is the dtype config.json names (bfloat16 for the released 26B model), float32 if none; a
    dtype may be named ("bfloat16").
    """
    device = check_device(device)
    directory = resolve_checkpoint(path_or_id)
    raw = _read_config_json(directory)
    shards = _shard_files(directory)
    # before the config is built: a config claiming 10**8 layers would take minutes and gigabytes to describe
    _check_layer_count(directory, raw, shards)
    config = read_config(directory, raw)
    dtype = _compute_dtype(dtype, auto=True)
    dtype = stored_dtype(directory, raw) if dtype == "auto" else dtype
    tokenizer, generation_config = _read_tokenizer(directory), _read_generation_config(directory)
    if generation_config is not None:
        _check_generation_config(directory / "generation_config.json", generation_config, config)
    try:
        with torch.device("meta"):
            model = DiffusionGemma(config)
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # sizes torch cannot even describe
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # not torch's C++ frames
        raise CheckpointError(f"{directory / 'config.json'}: sizes no model can be built with ({first_line})") \
            from None
    expected, report = _state(model), _ShardReport()
    _check_memory(directory, expected, dtype, device)
    save = _index_save(directory) if shards[0].name != SINGLE_FILE else None
    for shard in shards:
        with _unreadable_as_checkpoint_error(shard):
            _read_shard(shard, device, dtype, expected, report, save)
    report.check(directory, expected, dtype)
    if report.skipped_vision:
        log.info("skipped %d vision-tower tensors (the vision path is not modelled)", report.skipped_vision)
    model.load_state_dict(report.loaded, strict=True, assign=True)
    model.rotary = type(model.rotary)(config.layers)  # rebuilt off the meta device
    model.eval()
    if tokenizer is not None:
        model.tokenizer = tokenizer
    if generation_config is not None:
        model.generation_config = generation_config
    model.source = directory
    return model


def _check_memory(directory: Path, expected: dict[str, torch.Tensor], dtype: torch.dtype,
                  device: torch.device) -> None:
    """CheckpointError before any weight is read when they cannot fit where they go: the 26B model in bfloat16
    takes about 50 GB, and a load that runs out of memory after minutes of reading ends in an out-of-memory
    error from torch (a GPU) or the kernel's OOM killer (the CPU), if not in swapping."""
    free = free_memory(device)
    if free is None:
        return
    parameters = sum(tensor.numel() for tensor in expected.values())
    needed = parameters * dtype.itemsize
    if needed <= free:
        return
    smaller = [name for name, other in (("bfloat16", torch.bfloat16), ("float16", torch.float16))
               if other.itemsize < dtype.itemsize and parameters * other.itemsize <= free]
    hint = (f"load it in {smaller[0]} (dtype={smaller[0]!r}, CLI: --dtype {smaller[0]}), or " if smaller else "") + \
        ("use a GPU with more free memory" if device.type == "cuda" else "use a machine with more memory or a GPU")
    raise CheckpointError(f"{directory}: the weights take {_gigabytes(needed)} in {str(dtype).removeprefix('torch.')}"
                          f" ({parameters:,} parameters), and {device} has {_gigabytes(free)} free: {hint}")


def free_memory(device: torch.device) -> int | None:
    """Bytes that `device` can still hold: a GPU's free memory, or for the CPU the memory Linux says is available
    and its free swap (slow, but a machine set up to lean on swap or zram can load into it); None where that cannot
    be told."""
    if device.type == "cuda":  # what torch keeps cached but unused is free to it too (a model deleted before)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return (int(fields["MemAvailable"].split()[0]) + int(fields.get("SwapFree", "0").split()[0])) * 1024  # kB
    except (OSError, KeyError, ValueError):
        return None


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


@contextlib.contextmanager
def _unreadable_as_checkpoint_error(shard: Path):
    try:
        yield
    except SafetensorError as exc:
        if _looks_like_pickle(shard):
            raise CheckpointError(f"{shard}: a PyTorch pickle under a safetensors name (never unpickled here); "
                                  "diffsolve loads safetensors only") from None
        raise CheckpointError(f"{shard}: not a readable safetensors file ({exc}); it may be truncated or "
                              "damaged: download or save the checkpoint again") from None


def _looks_like_pickle(path: Path) -> bool:
    """torch.save's formats by their first bytes: a zip archive, or a pickle (protocol 2-5: 0x80 and the
    protocol). A safetensors file starts with its header's length, which may begin with the same bytes, but its
    header (a JSON object) then starts at byte 8."""
    try:
        with path.open("rb") as f:
            start = f.read(9)
    except OSError:
        return False
    pickled = start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return (start.startswith(b"PK\x03\x04") or pickled) and start[8:9] != b"{"


_LAYER = re.compile(r"model\.(?:decoder|encoder\.language_model)\.layers\.(\d+)\.")


MAX_LAYERS_UNCHECKED = 10_000  # where the weights are not counted: far beyond any model, a second to describe


def _check_layer_count(directory: Path, raw: object, shards: list[Path] | None) -> None:
    """A DiffusionGemma config.json's layer count against the layers the weights hold, from the shards' headers,
    or (`shards` None: the weights are not read) against MAX_LAYERS_UNCHECKED (another model type, or a count that
    is not a positive whole number, is left to `read_config` to name)."""
    text = raw.get("text_config") if isinstance(raw, dict) and raw.get("model_type") == "diffusion_gemma" else None
    claimed = text.get("num_hidden_layers") if isinstance(text, dict) else None
    if isinstance(claimed, bool) or not isinstance(claimed, int) or claimed < 1:
        return
    if shards is None:
        if claimed > MAX_LAYERS_UNCHECKED:
            raise CheckpointError(f"{directory}: config.json has num_hidden_layers {claimed:,}, more than any model "
                                  f"has (at most {MAX_LAYERS_UNCHECKED:,})")
        return
    held = set()
    for shard in shards:
        with _unreadable_as_checkpoint_error(shard), safe_open(str(shard), framework="pt") as f:
            held.update(int(m.group(1)) for m in map(_LAYER.match, f.keys()) if m)
    count = max(held) + 1 if held else 0
    if count != claimed:
        raise CheckpointError(f"{directory}: config.json has num_hidden_layers {claimed}, but the weights hold "
                              f"{count} layer{'s' * (count != 1)}")


def stored_dtype(directory: Path, raw: object = None) -> torch.dtype:
    """The weights' dtype as config.json names it (`dtype`, or the older `torch_dtype`), float32 when it names
    none (`raw`: the file's JSON, when already read)."""
    raw = _read_config_json(directory) if raw is None else raw
    name = raw.get("dtype") or raw.get("torch_dtype") if isinstance(raw, dict) else None
    if name is None:
        return torch.float32
    dtype = DTYPE_NAMES.get(str(name).removeprefix("torch."))
    if dtype is None:
        raise CheckpointError(f"{directory / 'config.json'}: dtype {name!r} is not one the model computes in "
                              "(float32, bfloat16, float16, float64)")
    return dtype


@dataclass
class CheckpointHeader:
    """What a checkpoint is, read without its weights: enough to refuse one made for another task before reading
    gigabytes (the released model's are 50 GB)."""

    config: ModelConfig
    tokenizer: object  # tokenizers.Tokenizer, or None when the checkpoint ships no tokenizer.json
    source: str


def read_header(path_or_id: str | os.PathLike) -> CheckpointHeader:
    """The config.json and tokenizer.json of a checkpoint directory or cached hub id (CheckpointError as
    `load_model` raises it). No weight file is opened (`load_model` counts the layers they hold); a layer count
    beyond any model is refused before 10**8 layers take minutes to describe."""
    directory = resolve_checkpoint(path_or_id)
    raw = _read_config_json(directory)
    _check_layer_count(directory, raw, None)
    return CheckpointHeader(read_config(directory, raw), _read_tokenizer(directory), str(path_or_id))


def _read_tokenizer(directory: Path):
    path = directory / "tokenizer.json"
    if not _is_file(path):
        return None
    from .tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except ValueError as exc:  # it names the file
        raise CheckpointError(str(exc)) from None


def _read_generation_config(directory: Path):
    path = directory / "generation_config.json"
    if not _is_file(path):
        return None
    from .sampler import SamplingConfig

    try:
        return SamplingConfig.from_hf_dict(_read_json(path))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a usable generation config ({type(exc).__name__}: {exc})") from None


def _check_generation_config(path: Path, generation, config: ModelConfig) -> None:
    """Token ids inside the vocabulary (`SamplingConfig.check_vocabulary`), as a CheckpointError naming the file."""
    try:
        generation.check_vocabulary(config.vocab_size)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _compute_dtype(dtype: torch.dtype | str, auto: bool = False) -> torch.dtype | str:
    """A torch dtype the engine computes in, from the dtype or its name in any case (as the CLI's --dtype);
    'auto' passes through where `auto`."""
    if isinstance(dtype, str):
        dtype = "auto" if auto and dtype.lower() == "auto" else DTYPE_NAMES.get(dtype.lower(), dtype)
    if dtype not in COMPUTE_DTYPES and not (auto and dtype == "auto"):
        choices = ("'auto', " if auto else "") + "torch.float32, torch.bfloat16, torch.float16 or torch.float64"
        raise ValueError(f"dtype: expected {choices} (or its name: {', '.join(DTYPE_NAMES)}), got {dtype!r}")
    return dtype


def new_model(config: ModelConfig, seed: int = 0, dtype: torch.dtype | str = torch.float32,
              device: str | torch.device = "cpu") -> DiffusionGemma:
    """A freshly initialised model (training from scratch, tests); `dtype` as `load_model` takes it (or its name)."""
    seed = arguments.seed(seed)
    dtype = _compute_dtype(dtype)
    model = DiffusionGemma(config)
    model.init_weights(seed)
    return model.to(device=check_device(device), dtype=dtype)


# ------------------------------------------------------------------------------------------ save
def save_model(model: DiffusionGemma, path: str | os.PathLike, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write the HF layout, each file complete before it appears. Sharded, the index is written last and names
    the save, as does every shard: a save cut short after replacing some shards of an earlier one is refused at
    load, not read as a mix. An earlier save's weight files that the new one does not name are removed."""
    from .sampler import released_config

    max_shard_bytes = arguments.whole(max_shard_bytes, "max_shard_bytes", 1)  # 0 wrote one shard per tensor
    # the JSON files first: settings they cannot hold are refused before anything is written
    config = model.config.to_hf_dict()
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    # One canvas unless the model's settings say otherwise: without it transformers would generate 256 tokens
    settings = released_config(model)
    _check_generation_config(Path(path) / "generation_config.json", settings, model.config)  # what load refuses
    generation = settings.to_hf_dict()
    generation.setdefault("max_new_tokens", model.config.canvas_length)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {hf_name(n): t.detach() for n, t in _state(model).items()}  # brought to the host a shard at a time
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    save = secrets.token_hex(8)
    meta = {"format": "pt", SAVE_KEY: save}
    earlier = _weight_files(out)
    if len(shards) == 1:
        write_atomically(out / SINGLE_FILE, lambda p: save_file(_on_host(shards[0]), str(p), metadata=meta))
        (out / INDEX_FILE).unlink(missing_ok=True)
        written = {SINGLE_FILE}
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for name, shard in zip(names, shards):  # one at a time: at most one shard more on disk (and host) at once
            write_atomically(out / name, lambda p, s=shard: save_file(_on_host(s), str(p), metadata=meta))
        weight_map = {tensor: name for name, shard in zip(names, shards) for tensor in shard}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        _write_json(out / INDEX_FILE, {"metadata": {"total_size": total, SAVE_KEY: save}, "weight_map": weight_map})
        (out / SINGLE_FILE).unlink(missing_ok=True)
        written = set(names)
    shards_here = {f.name for f in out.glob("model-*-of-*.safetensors") if SHARD_NAME.fullmatch(f.name)}
    for stale in (earlier | shards_here) - written:  # an earlier save's, or a cut-short save's, weight files
        (out / stale).unlink(missing_ok=True)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", generation)
    if model.tokenizer is not None:
        write_atomically(out / "tokenizer.json", lambda p: model.tokenizer.save(str(p)))
        if (settings := tokenizer_settings(model.tokenizer)) is not None:
            _write_json(out / "tokenizer_config.json", settings)
        elif model.source is not None and Path(model.source).resolve() != out.resolve():
            for name in TOKENIZER_COMPANIONS:  # Gemma's own: its settings and chat template go with it
                if (Path(model.source) / name).is_file():
                    data = (Path(model.source) / name).read_bytes()
                    write_atomically(out / name, lambda p, data=data: p.write_bytes(data))


def _on_host(shard: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shard's tensors in host memory, as safetensors writes them (a GPU model's whole weights never are)."""
    return {name: tensor.contiguous().cpu() for name, tensor in shard.items()}


# What a checkpoint's own tokenizer.json comes with (transformers' AutoTokenizer and processors read them)
TOKENIZER_COMPANIONS = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                        "chat_template.json", "processor_config.json", "preprocessor_config.json")


def tokenizer_settings(tokenizer: Tokenizer) -> dict | None:
    """tokenizer_config.json for our word-level task vocabularies, so that transformers' AutoTokenizer reads
    tokenizer.json as it is (without one it builds a GemmaTokenizer, which turns each space into <unk>); None for
    other tokenizers, such as Gemma's own, whose checkpoints bring their own."""
    if json.loads(tokenizer.to_str())["model"]["type"] != "WordLevel":
        return None
    return {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "<eos>",
            "bos_token": "<bos>", "unk_token": "<unk>"}


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8"))


def _weight_files(directory: Path) -> set[str]:
    """The weight files a checkpoint folder holds now: the single file and the shards its index names."""
    names = {SINGLE_FILE} if (directory / SINGLE_FILE).is_file() else set()
    try:
        names |= set(_read_json(directory / INDEX_FILE)["weight_map"].values())
    except (CheckpointError, KeyError, TypeError, AttributeError):  # no index, or not one we can read
        pass
    return {name for name in names if isinstance(name, str) and Path(name).name == name}
