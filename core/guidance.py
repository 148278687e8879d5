"""The hooks through which constraints steer sampling (`Guidance`), run batched over the whole canvas every pass:
a logit bias and allowed-token masks before sampling, which positions may settle, violation re-noising after
acceptance, and a verifier that stops a row as solved. `Pins` fixes tokens and nothing else."""

from __future__ import annotations

import torch
from torch import Tensor

from . import arguments


class Guidance:
    """Constraint hooks applied every denoising pass. All tensors are batched over canvases [B, L].

    Subclasses override what they need; the defaults constrain nothing. `constraints.ConstraintModel`
    compiles declarative constraints into one of these. `needs_kept_tokens`: the hooks reason about which
    tokens were settled when (a search over guesses), which holds only if the sampler keeps accepted tokens
    (`SamplingConfig(keep_accepted=True)`, as `guided_config` sets); `denoise_canvas` refuses it otherwise.
    `device` and `canvas_shape` (positions, vocabulary), where set, name what the hooks were made for; the
    sampler refuses another model's. Hooks that keep per-row state define `select` and `batch_size`.

    `pinned` is asked once per canvas block and `start` once as a search begins; every pass then calls `bias`,
    `allowed`, `settleable`, `violations` and `verify`, in that order (and `retire` after a `verify` that returned
    rows), so a hook may hand what it computed to a later one of the same pass (`CompiledConstraints` hands
    `allowed`'s propagation to `settleable` and its guess search).
    """

    needs_kept_tokens: bool = False
    device: torch.device | None = None
    canvas_shape: tuple[int, int] | None = None
    batch_size: int | None = None

    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        """(mask [B, L] bool, values [B, L]) of positions whose token is fixed; [1, L] each for every canvas."""
        return None

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        """Bool [B|1, L, V]: tokens that may be sampled, given the current canvas and its settled positions."""
        return None

    def bias(self, canvas: Tensor) -> Tensor | None:
        """Float [B|1, L|1, V]: added to the tempered logits before `allowed` masks them, to lean the draws one
        way; the entropy bound and the next pass's self-conditioning see the leaned logits, as they see the mask."""
        return None

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor | None:
        """Bool [B, L]: accepted positions a constraint rejects; they are re-noised."""
        return None

    def settleable(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        """Bool [B, L]: positions that may be accepted this pass (settled ones always may); the others are
        re-noised whatever their entropy. For problems whose tokens must be committed in order."""
        return None

    def verify(self, canvas: Tensor) -> Tensor | None:
        """Bool [B]: rows whose canvas is a verified solution; they stop early."""
        return None

    def start(self) -> None:
        """Called as a search begins (`denoise_canvas` of the first block, after its checks of the hooks and their
        pins): hooks that keep one search's state refuse a second search here rather than continue the first's."""

    def retire(self, solved: Tensor) -> Tensor | None:
        """Bool [B]: unsolved rows to stop anyway, given the rows solved so far (e.g. the other parallel
        canvases of an instance one canvas already solved)."""
        return None

    def select(self, rows: Tensor) -> "Guidance":
        """The hooks for a subset of the rows (when finished rows leave the batch). Stateless: itself."""
        return self

    def repeat(self, n: int) -> "Guidance":
        """Each row's hooks n times in a row (parallel canvases of one instance). Stateless: itself."""
        n = arguments.whole(n, "n", 1)
        if type(self).select is Guidance.select:
            return self
        if self.batch_size is None:
            raise NotImplementedError(f"{type(self).__name__} keeps per-row state (it defines select): define "
                                      "batch_size, or repeat")
        return self.select(torch.arange(self.batch_size, device=self.device).repeat_interleave(n))


class Pins(Guidance):
    """Fixed tokens and nothing else: the model-only baselines keep a problem's pins (clues, padding) only."""

    def __init__(self, mask: Tensor, values: Tensor):
        self.mask, self.values = mask, values  # [B, L] bool, [B, L] token ids (read where mask is set)

    @classmethod
    def of(cls, guidance: Guidance, batch: int, device: torch.device) -> Guidance:
        """Only the pins of `guidance` (for `batch` canvases), none of its other constraints."""
        pins = guidance.pinned(batch, device)
        return Guidance() if pins is None else cls(*pins)

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        return self.mask.to(device), self.values.to(device)

    def select(self, rows: Tensor) -> "Pins":
        if self.mask.shape[0] == 1:  # one set of pins for every canvas
            return self
        rows = rows.to(self.mask.device)  # the sampler's rows live on the model's device, the pins may not
        return Pins(self.mask[rows], self.values[rows])


def any_sibling(flags: Tensor, rows: Tensor) -> Tensor:
    """[B, ...]: `flags` OR-ed over the canvases that share an instance (`rows` [B]: each canvas's instance)."""
    pooled = torch.zeros(int(rows.max()) + 1, *flags.shape[1:], dtype=torch.long, device=flags.device)
    return pooled.index_add_(0, rows.to(flags.device), flags.long())[rows.to(flags.device)] > 0
