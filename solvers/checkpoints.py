"""Where the checkpoints shipped with diffsolve live."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..core import CheckpointError, CheckpointHeader, DiffusionGemma, load_model, read_header

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

SHIPPED = {"sorting": "sort-demo", "sudoku": "sudoku", "molecules": "molecules", "graphs": "graphs"}


def default_checkpoint(task: str) -> Path:
    """The shipped checkpoint directory for `task` (inside the installed `diffsolve.models` package)."""
    from .. import models

    if task not in SHIPPED:
        raise KeyError(f"no shipped checkpoint for task {task!r}")
    return Path(models.__file__).parent / SHIPPED[task]


def check_task_model(model: DiffusionGemma | CheckpointHeader, task: str, tokenizer: Tokenizer, canvas: int,
                     exact: bool = False, solver: str | None = None) -> None:
    """Refuse a checkpoint made for another task (its token ids would mean other things) before any sampling:
    its vocabulary must be the task's `tokenizer` (token for token, when it ships tokenizer.json; in size
    otherwise). `exact`: the task samples the model's whole canvas, so it must be exactly `canvas` long.
    `solver`: who needs it, in the message (default: the task's solver)."""
    if not isinstance(model, (DiffusionGemma, CheckpointHeader)):
        raise TypeError(f"model must be a DiffusionGemma (diffsolve.core.load_model, or the solver's from_pretrained),"
                        f" got {type(model).__name__}")
    config, vocab_size = model.config, tokenizer.get_vocab_size()
    if config.vocab_size != vocab_size or config.canvas_length < canvas or exact and config.canvas_length != canvas:
        raise CheckpointError(f"{model.source or 'this model'}: not a {task} checkpoint (vocabulary of "
                              f"{config.vocab_size} tokens, canvas of {config.canvas_length}; "
                              f"{solver or f'the {task} solver'} needs {vocab_size} tokens and a canvas of "
                              f"{'' if exact else 'at least '}{canvas})")
    theirs, ours = (model.tokenizer.get_vocab() if model.tokenizer else None), tokenizer.get_vocab()
    if theirs is not None and theirs != ours:
        differ = sorted((token for token in ours if theirs.get(token) != ours[token]), key=ours.get)[:5]
        raise CheckpointError(f"{model.source or 'this model'}: not a {task} checkpoint (its tokenizer.json gives "
                              f"other ids to {', '.join(map(repr, differ)) or 'tokens the ' + task + ' solver lacks'})")


class Pretrained:
    """`from_pretrained` for a solver whose constructor takes the model first; `CHECKPOINT` names the task whose
    shipped checkpoint it loads by default."""

    CHECKPOINT: str
    TOKENIZER: Tokenizer
    CANVAS: int  # the longest canvas the task samples, which the model must hold

    @classmethod
    def from_pretrained(cls, path: str | None = None, *, device: str = "cpu", dtype: torch.dtype | str = "auto",
                        **kwargs) -> Self:
        """The solver on the shipped checkpoint, or on `path` (a checkpoint directory or a cached hub id), in
        `dtype` ("auto": the one config.json names; torch.bfloat16 or "bfloat16" ...); `kwargs` go to the
        constructor. A checkpoint made for another task is refused before its weights are read."""
        try:  # a misspelt setting is named before a model of gigabytes is read, not after
            inspect.signature(cls).bind(None, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}.from_pretrained: {exc} (settings: "
                            f"{', '.join(list(inspect.signature(cls).parameters)[1:])})") from None
        checkpoint = default_checkpoint(cls.CHECKPOINT) if path is None else path
        cls.check_checkpoint(read_header(checkpoint))
        return cls(load_model(checkpoint, dtype=dtype, device=device), **kwargs)

    @classmethod
    def check_checkpoint(cls, model: DiffusionGemma | CheckpointHeader) -> None:
        """`check_task_model` for this task: on a model, or on a checkpoint's config and tokenizer alone."""
        check_task_model(model, cls.CHECKPOINT, cls.TOKENIZER, cls.CANVAS, solver=cls.__name__)
