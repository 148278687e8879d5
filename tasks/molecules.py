"""Molecules on the canvas: atom-level SMILES, conditioned on property bins and an optional scaffold.

Prompt: BOS, one bin token per conditioned property (`<logp=3>`, or `<logp=?>` when the request leaves it
open), then optionally `<scaffold>` and the scaffold's SMILES tokens. Canvas: the molecule's canonical SMILES
tokens, EOS, then padding. Training drops each condition with probability 1/2, so one model serves free
generation and every combination of conditions.

Scaffolds (and substructures written as SMILES) are also pinned on the canvas: in a SMILES string a
fragment's atoms are interleaved with its decorations at positions nobody knows in advance, so each canvas
draws its own layout (`fragment_layouts`): the fragment written from a random root atom, with free stretches
before and after it and up to two branch slots `(...)` after atoms that carry hydrogens; the model fills the
free positions, and RDKit verifies the result. The model is trained only on whole molecules (with the scaffold
in the prompt); the layouts are a sampling-time constraint.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import reprlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rdkit import Chem
from rdkit.Chem import FilterCatalog, Lipinski, rdMolDescriptors

from ..core import DiffusionGemma, Guidance, ModelConfig, arguments, word_level_tokenizer
from ..core.training import Batch, cached_training_set
from .molecule_data import (CONDITION_BINS, MAX_SMILES_TOKENS, PROPERTIES, SMILES_TOKENS, TRAINING_RANGES, SmilesError,
                            bin_index, bin_ranges, compute_properties, condition_tokens, exact_properties,
                            rdkit_quiet, tokenize_known)
from .text import plural

CANVAS = 64
TOKENIZER = word_level_tokenizer([*SMILES_TOKENS, *condition_tokens()])
PAD, EOS, BOS = (TOKENIZER.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>"))
SCAFFOLD = TOKENIZER.token_to_id("<scaffold>")
SMILES_IDS = torch.tensor([TOKENIZER.token_to_id(t) for t in SMILES_TOKENS])
ID_TO_TOKEN = [TOKENIZER.id_to_token(i) for i in range(TOKENIZER.get_vocab_size())]
CONDITIONED = tuple(CONDITION_BINS)
MAX_SCAFFOLD_TOKENS = 47  # the longest scaffold of the first model's training subset; training skips longer ones
# Prompts always have this width (padded after their content): canvas positions then sit at a fixed distance
# from BOS, as in training. (A model trained on batch-dependent widths lost track of canvas positions when
# sampled with short prompts.)
PROMPT_WIDTH = 1 + len(CONDITIONED) + 1 + MAX_SCAFFOLD_TOKENS
# First bin token id of each conditioned property; its "unspecified" token follows the last bin.
BIN_BASE = {name: TOKENIZER.token_to_id(f"<{name}=0>") for name in CONDITIONED}
UNSPECIFIED = {name: TOKENIZER.token_to_id(f"<{name}=?>") for name in CONDITIONED}
# Default largest ring: MOSES has no ring of 8+ atoms (its filters reject them), but backtracking can close one by
# pairing ring digits far apart. Measured on 1,000 guided canvases: 668 molecules of which 73 had such a ring
# (83.7 % pass MOSES's filters) without the limit; 601 with it (95.5 % pass), more passing molecules in all.
MAX_RING_SIZE = 7


# Released sampler settings (generation_config.json): 96 passes instead of the engine's 48. The sampler stops a
# canvas once it is stable and confident; at 48 some are cut off before that, and the argmax of an unsettled
# canvas is rarely a molecule. Development run, 500 unconditioned canvases of the stage-6 model (valid, mean
# passes): 49.4 % at 48 passes (36.3), 57.0 % at 96 (48.0), 57.0 % at 128 (53.0), 56.2 % at 192 (60.2).
SAMPLER = {"max_denoising_steps": 96}
AR_WEIGHT = 0.0  # diffusion loss only: the encoder then reads just the prompt (a third less compute on CPU)
DATA_CARD = ("MOSES training split (`train.csv.gz` from the `molsets==0.3.1` wheel), a seeded random subset "
             "featurized with RDKit (Crippen logP, MolWt, TPSA, Bemis-Murcko scaffold). Prompts show each property "
             "bin and the scaffold with probability 1/2. No test or scaffold-test molecules are used.")


def model_config() -> ModelConfig:
    """About 0.87M parameters, sized for CPU training; prompt + canvas (< 130 tokens) fits every window."""
    return ModelConfig(
        vocab_size=TOKENIZER.get_vocab_size(), hidden_size=96, intermediate_size=192, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=24, num_experts=4, top_k_experts=2, moe_intermediate_size=96,
        layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=128,
        per_layer_overrides={i: {"head_dim": 48, "num_key_value_heads": 1} for i in (1, 3)},
        canvas_length=CANVAS,
    )


TOKEN_IDS = TOKENIZER.get_vocab()


def encode_tokens(tokens: Sequence[str]) -> list[int]:
    return [TOKEN_IDS[t] for t in tokens]


IS_SMILES = torch.zeros(TOKENIZER.get_vocab_size(), dtype=torch.bool)
IS_SMILES[SMILES_IDS] = True


def molecule_ends(canvas: Tensor) -> Tensor:
    """[B] index of the first EOS or PAD of each row, -1 when there is none. Training puts EOS then padding
    after the molecule; the model sometimes writes the padding first, which ends the molecule too."""
    is_end = (canvas == EOS) | (canvas == PAD)
    return torch.where(is_end.any(1), is_end.int().argmax(1), -1)


def decode(canvas: Tensor) -> list[str | None]:
    """SMILES up to the end of each molecule, or None when a canvas has no end, nothing before it, or a
    non-SMILES token before it (such canvases are never valid answers)."""
    ends = molecule_ends(canvas)
    inside = torch.arange(canvas.shape[1], device=canvas.device) < ends[:, None]
    ok = ((ends > 0) & (IS_SMILES.to(canvas.device)[canvas] | ~inside).all(1)).tolist()
    return ["".join(ID_TO_TOKEN[t] for t in row[:end]) if good else None
            for row, end, good in zip(canvas.tolist(), ends.tolist(), ok)]


# ------------------------------------------------------------------------------------------ prompts
def bin_token(name: str, value: float) -> int:
    return BIN_BASE[name] + int(bin_index(name, value))


def window_bins(name: str, window: tuple[float, float]) -> list[int]:
    """Bin tokens of `name` whose range overlaps `window`: each is a legitimate condition for a molecule
    inside the window."""
    lo, hi = window
    return [BIN_BASE[name] + k for k, (a, b) in enumerate(bin_ranges(name))
            if min(b, hi) > max(a, lo) or a <= lo == hi < b]


def encode_prompts(conditions: Sequence[dict[str, int]], scaffolds: Sequence[list[int] | None]) -> Tensor:
    """[B, PROMPT_WIDTH] prompts: BOS, a token per conditioned property, `<scaffold>` + ids when given, padding."""
    prompts = np.full((len(conditions), PROMPT_WIDTH), PAD, dtype=np.int64)
    for prompt, cond, scaffold in zip(prompts, conditions, scaffolds):
        row = [BOS] + [cond.get(name, UNSPECIFIED[name]) for name in CONDITIONED]
        if scaffold:
            row += [SCAFFOLD, *scaffold]
        prompt[:len(row)] = row
    return torch.from_numpy(prompts)


def scaffold_ids(scaffold: str | None) -> list[int] | None:
    if not scaffold:
        return None
    try:
        ids = encode_tokens(tokenize_known(scaffold))
    except SmilesError as exc:
        raise SmilesError(f"scaffold: {exc}") from None
    if len(ids) > MAX_SCAFFOLD_TOKENS:
        raise SmilesError(f"scaffold: {scaffold!r} has {len(ids)} tokens; the prompt holds {MAX_SCAFFOLD_TOKENS}")
    return ids


# ------------------------------------------------------------------------------------------ training data
class MoleculeStream:
    """Training batches from featurized molecules; each condition (each property bin and the scaffold) is
    shown with probability `keep` and replaced by its 'unspecified' form otherwise."""

    def __init__(self, data: dict[str, np.ndarray], keep: float = 0.5):
        fits = torch.as_tensor((data["scaffolds"] != PAD).sum(1) <= MAX_SCAFFOLD_TOKENS)  # 1 in 300k did not
        self.molecules = torch.as_tensor(data["molecules"].astype(np.int64))[fits]
        self.scaffolds = torch.as_tensor(data["scaffolds"].astype(np.int64))[fits]
        self.bins = torch.stack([BIN_BASE[name] + torch.as_tensor(bin_index(name, data[name]))
                                 for name in CONDITIONED], dim=1)[fits]
        self.keep = keep

    def __len__(self) -> int:
        return len(self.molecules)

    def batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        index = torch.randint(0, len(self), (batch_size,), generator=generator)
        molecules, scaffolds, bins = self.molecules[index], self.scaffolds[index], self.bins[index]
        unspecified = torch.tensor([UNSPECIFIED[name] for name in CONDITIONED])
        show = torch.rand(bins.shape, generator=generator) < self.keep
        bins = torch.where(show, bins, unspecified)
        show_scaffold = (torch.rand(batch_size, generator=generator) < self.keep) & (scaffolds[:, 0] != PAD)
        scaffold_len = torch.where(show_scaffold, (scaffolds != PAD).sum(1), 0)
        width = int(scaffold_len.max())
        prompt = torch.full((batch_size, PROMPT_WIDTH), PAD)
        prompt[:, 0] = BOS
        prompt[:, 1:1 + len(CONDITIONED)] = bins
        if width:
            body = scaffolds[:, :width].masked_fill(torch.arange(width) >= scaffold_len[:, None], PAD)
            prompt[:, 1 + len(CONDITIONED)] = torch.where(show_scaffold, SCAFFOLD, PAD)
            prompt[:, 2 + len(CONDITIONED):2 + len(CONDITIONED) + width] = body
        length = (molecules != PAD).sum(1)
        canvas = torch.full((batch_size, CANVAS), PAD)
        canvas[:, :molecules.shape[1]] = molecules
        canvas[torch.arange(batch_size), length] = EOS
        return Batch(prompt, canvas)


def training_set(path: Path, examples: int, seed: int, workers: int = 2, check: bool = True) -> dict[str, np.ndarray]:
    """Featurized MOSES training molecules (a seeded random subset of `examples`), cached as .npz."""
    from .molecule_data import featurize, read_moses

    def build() -> dict[str, np.ndarray]:
        smiles = read_moses("train")
        order = np.random.default_rng(seed).permutation(len(smiles))[:examples]
        return featurize([smiles[i] for i in order], workers)

    layout = {"molecules": (MAX_SMILES_TOKENS,), "scaffolds": (MAX_SMILES_TOKENS,),
              **{name: () for name in CONDITIONED}}
    data = cached_training_set(path, build, {"examples": examples, "seed": seed}, layout, check)
    allowed = IS_SMILES.numpy().copy()
    allowed[PAD] = True
    for name in ("molecules", "scaffolds"):
        ids = data[name]
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{path}: '{name}' holds {ids.dtype} values, not token ids (whole numbers)")
        if ids.size and (ids.min() < 0 or ids.max() >= len(allowed) or not allowed[ids].all()):
            raise ValueError(f"{path}: '{name}' holds ids that are neither SMILES tokens nor padding")
    return data


def batches(out_dir: Path, seed: int, batch_size: int, device: str, data: Path | None = None,
            examples: int = 400_000, workers: int = 2) -> Callable[[int, torch.Generator], Batch]:
    stream = MoleculeStream(training_set(data or out_dir / "moses_train.npz", examples, seed, workers,
                                         check=data is None))
    return lambda step, generator: stream.batch(generator, batch_size)


# ------------------------------------------------------------------------------------------ evaluation
@rdkit_quiet
@torch.no_grad()
def evaluate(model: DiffusionGemma, n: int = 256, seed: int = 10**6) -> dict[str, float]:
    """Unconditional samples from the checkpoint's own sampler settings (no guidance): RDKit validity and uniqueness."""
    from ..core import generate, one_canvas, released_config

    prompt = encode_prompts([{}] * n, [None] * n).to(model.device)
    out = generate(model, prompt, released_config(model, eos_token_id=EOS, pad_token_id=PAD, **one_canvas(CANVAS)),
                   generator=torch.Generator(model.device).manual_seed(seed))
    smiles = decode(out.canvas)
    valid = [s for s in smiles if s and Chem.MolFromSmiles(s) is not None]
    return {"stock_validity": len(valid) / n, "stock_unique_valid": len(set(valid)) / max(1, len(valid)),
            "stock_passes_mean": out.forward_passes.float().mean().item()}


# ------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class MoleculeRequest:
    """What a molecule must satisfy: property windows (inclusive), a SMARTS substructure, a scaffold, the
    largest ring, structural-alert catalogs it must not match.
    Built by `MoleculeRequest.parse`, which rejects malformed or impossible requests before any work."""

    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    contains: str | None = None
    scaffold: str | None = None
    max_ring_size: int | None = MAX_RING_SIZE  # None: rings of any size
    avoid: tuple[str, ...] = ()  # names of RDKit FilterCatalog catalogs (ALERT_CATALOGS)

    @classmethod
    @rdkit_quiet
    def parse(cls, windows: dict[str, tuple[float, float] | None] | None = None,
              contains: str | Chem.Mol | None = None, scaffold: str | Chem.Mol | None = None,
              max_ring_size: int | None = MAX_RING_SIZE, avoid: str | Sequence[str] | AbstractSet[str] | None = None
              ) -> "MoleculeRequest":
        """`contains` is SMARTS text or an RDKit query/molecule (a molecule is read as its SMILES, as if typed:
        written on the canvas, and matched as that text reads as SMARTS, so 'C' is an aliphatic carbon and '[nH]'
        keeps its hydrogen; for RDKit's looser molecule-as-query matching pass `Chem.MolToSmarts(mol)`); `scaffold`
        SMILES text or an RDKit molecule; `avoid` catalog names (ALERT_CATALOGS, any case): a list, tuple or set,
        or comma-separated text."""
        contains, scaffold = _pattern_text(contains, "contains"), _pattern_text(scaffold, "scaffold")
        checked = _checked_windows(windows)
        if contains is not None:
            _check_contains(contains)
        if scaffold is not None:
            scaffold = _canonical_scaffold(scaffold)
        if max_ring_size is not None:
            try:
                max_ring_size = arguments.whole(max_ring_size, "max_ring_size", 3)
            except (TypeError, ValueError) as exc:
                raise RequestError(f"{exc} (3 is the smallest ring; None allows any size)") from None
        request = cls(checked, contains, scaffold, max_ring_size, alert_catalog_names(avoid))
        request._check_feasible()
        return request

    def checked(self) -> "MoleculeRequest":
        """This request as `parse` builds it: RequestError for what parse refuses (a request built by hand)."""
        return MoleculeRequest.parse(self.windows, self.contains, self.scaffold, self.max_ring_size,
                                     self.avoid or None)

    def _check_feasible(self) -> None:
        """Windows no molecule containing the requested parts can meet."""
        self._check_windows_agree()
        sole = self.sole_molecule
        if sole is not None and (missed := self.misses(sole)):
            raise RequestError(f"{self._only_itself(sole)}, which misses the request ({', '.join(missed)})")
        if self.scaffold:
            scaffold = Chem.MolFromSmiles(self.scaffold)
            self._check_part("scaffold", f"scaffold {self.scaffold}", scaffold, scaffold)
        if self.contains:  # a SMARTS query; read as SMILES too, when it does, for its rings and weight
            self._check_part("contains", f"substructure {self.contains}", Chem.MolFromSmarts(self.contains),
                             Chem.MolFromSmiles(self.contains))

    def _check_part(self, argument: str, label: str, query: Chem.Mol, spelled: Chem.Mol | None) -> None:
        """Refuse a part every answer holds (the scaffold, decorated; the `contains` pattern) that alone is longer
        than the canvas, has or asks for a ring over max_ring_size, or breaks a window (`_part_floors`)."""
        decorated = argument == "scaffold"
        if query.GetNumAtoms() + decorated > MAX_SMILES_TOKENS:  # a token per atom at least
            raise RequestError(f"{argument}: the {label} has {query.GetNumAtoms()} atoms; a molecule on the canvas "
                               f"has at most {MAX_SMILES_TOKENS} tokens, one or more per atom")
        largest = max((len(ring) for ring in spelled.GetRingInfo().AtomRings()), default=0) if spelled else 0
        if self.max_ring_size and largest > self.max_ring_size:  # a part's own rings are in every match
            raise RequestError(f"{argument}: the {label} has a ring of {largest} atoms, larger than "
                               f"max_ring_size={self.max_ring_size}; allow it with max_ring_size={largest} "
                               f"or None (CLI: --max-ring-size {largest} or 0)")
        ring_sizes = [_smallest_ring_sizes(_query_tree(atom.DescribeQuery()))
                      for atom in query.GetAtoms() if atom.HasQuery()]
        least = max((min(sizes) for sizes in ring_sizes if 0 not in sizes), default=0)  # 'r8': in a ring of 8 or more
        if self.max_ring_size and least > self.max_ring_size:
            raise RequestError(f"{argument}: the {label} asks for an atom whose smallest ring has {least} atoms or "
                               f"more, larger than max_ring_size={self.max_ring_size}; allow it with "
                               f"max_ring_size={least} or None (CLI: --max-ring-size {least} or 0)")
        for name, floor in _part_floors(query, spelled, decorated).items():
            if name in self.windows and self.windows[name][1] < floor - 1e-9:
                raise RequestError(f"{name}: window {_fmt(self.windows[name], name)} is impossible: "
                                   + _floor_reason(name, floor, label))

    def _check_windows_agree(self) -> None:
        """Windows that contradict each other: n heavy atoms hold at most so many rings; each heavy atom with its
        hydrogens weighs between a bare carbon and a bromine."""
        w = self.windows
        atoms = w.get("heavy_atoms", (1, math.inf))
        most = _most_rings(atoms[1])
        if "rings" in w and w["rings"][0] > most:
            raise RequestError(f"rings: window {_fmt(w['rings'], 'rings')} is impossible with heavy_atoms "
                               f"{_fmt(atoms, 'heavy_atoms')}: "
                               + ("a ring needs at least 3 atoms" if most == 0
                                  else f"{atoms[1]:g} atoms hold at most {plural(most, 'ring')}"))
        for name in ("hbd", "hba"):  # a donor or an acceptor is a heavy atom (N, O or S)
            if name in w and w[name][0] > atoms[1]:
                raise RequestError(f"{name}: window {_fmt(w[name], name)} is impossible with heavy_atoms "
                                   f"{_fmt(atoms, 'heavy_atoms')}: each of the {PROPERTIES[name].description} is "
                                   "one of the heavy atoms")
        if "mw" in w and "heavy_atoms" in w:
            lightest, heaviest = CARBON * atoms[0], BROMINE * atoms[1]
            if w["mw"][0] > heaviest or w["mw"][1] < lightest:
                raise RequestError(f"mw: window {_fmt(w['mw'], 'mw')} is impossible with heavy_atoms "
                                   f"{_fmt(atoms, 'heavy_atoms')}: "
                                   f"such molecules weigh {lightest:g} to {heaviest:g}")

    @property
    @rdkit_quiet  # most SMARTS do not read as SMILES: RDKit's parse error is no news here
    def fragment(self) -> str | None:
        """SMILES of the part every answer contains, to pin on the canvas: the scaffold, or the `contains`
        pattern when it also reads as SMILES in the model's vocabulary (e.g. 'NS(=O)=O'); None otherwise."""
        if self.scaffold:
            return self.scaffold
        spelled = Chem.MolFromSmiles(self.contains) if self.contains else None
        if spelled is None:
            return None
        if not any(spare_hydrogens(spelled, keep_bracket_hydrogens=True)) and _can_grow(spelled):
            return None  # pinned, it would be the whole molecule though more can bond to it ('S(=O)=O'): matched
        for text in (self.contains, Chem.MolToSmiles(spelled)):  # as typed, or as RDKit writes it ('[OH]': 'O')
            try:
                scaffold_ids(text)
            except SmilesError:
                continue
            return self.contains
        return None

    @property
    @rdkit_quiet
    def sole_molecule(self) -> Chem.Mol | None:
        """The one molecule that contains the `contains` pattern, when that is the pattern itself ('FF',
        'ClC(Cl)(Cl)Cl'): it reads as SMILES, and no atom of it has a hydrogen to replace or room for a bond."""
        spelled = Chem.MolFromSmiles(self.contains) if self.contains and not self.scaffold else None
        if spelled is None or any(spare_hydrogens(spelled, keep_bracket_hydrogens=True)) or _can_grow(spelled):
            return None
        return spelled

    def check_count(self, n: int) -> None:
        """RequestError when fewer than `n` distinct molecules can meet the request (a pattern that is only
        itself, `sole_molecule`)."""
        if n > 1 and (sole := self.sole_molecule) is not None:
            raise RequestError(f"{self._only_itself(sole)}: ask for 1 molecule, not {n}")

    def _only_itself(self, sole: Chem.Mol) -> str:
        return f"contains: {self.contains!r} matches only the molecule {Chem.MolToSmiles(sole)} itself"

    @rdkit_quiet
    def verify(self, mol: Chem.Mol) -> tuple[bool, dict[str, float]]:
        """(every requested condition holds, the requested properties' values, rounded for display). Windows
        are checked on RDKit's exact values: a QED of 0.55012 is not inside 0:0.5501."""
        return next(self._misses(mol), None) is None, compute_properties(mol, list(self.windows))

    @rdkit_quiet
    def misses(self, mol: Chem.Mol) -> list[str]:
        """The requested conditions `mol` does not meet, in words ('logp below 2', 'hbd above 1', 'no [OH]'); []
        when it is verified."""
        return list(self._misses(mol))

    def _misses(self, mol: Chem.Mol) -> Iterator[str]:
        for name, below in self.missed_windows(mol).items():
            yield f"{name} below {self.windows[name][0]:g}" if below else f"{name} above {self.windows[name][1]:g}"
        yield from self.structure_misses(mol)

    def structure_misses(self, mol: Chem.Mol) -> Iterator[str]:
        """`misses` beyond the windows, lazily: the pattern, the scaffold, the ring size, the alerts."""
        if self.contains and not mol.HasSubstructMatch(_smarts(self.contains), useChirality=True):
            yield f"no {self.contains}"
        if self.scaffold and not decorates(mol, _smiles_query(self.scaffold)):
            yield f"no decorated {self.scaffold}"
        if self.max_ring_size and any(len(ring) > self.max_ring_size for ring in mol.GetRingInfo().AtomRings()):
            yield f"a ring over {self.max_ring_size} atoms"
        if self.avoid and alert_catalog(self.avoid).HasMatch(mol):
            yield f"a {', '.join(self.avoid)} alert"

    def substructures(self) -> list[Chem.Mol]:
        """The query molecules a verified molecule contains: the scaffold (matched as the verifier matches it), then
        the `contains` pattern; for highlighting them in pictures."""
        return ([_smiles_query(self.scaffold)] if self.scaffold else []) + \
            ([_smarts(self.contains)] if self.contains else [])

    @rdkit_quiet
    def unlikely(self) -> list[str]:
        """What makes verified molecules rare or absent within a budget, each beginning with the argument's name:
        windows wholly outside the MOSES training molecules' range (TRAINING_RANGES), a `contains` pattern the
        scaffold does not hold (only the scaffold is written) that makes a long molecule, and a pinned fragment
        that itself carries an alert to avoid (only decorations that break the alert verify)."""
        doubts = []
        for name, (lo, hi) in self.windows.items():
            if where := _outside_training(name, lo, hi):
                doubts.append(f"{name}: window {_fmt((lo, hi), name)} {where} the training molecules' range "
                              f"{_fmt(TRAINING_RANGES[name])}: verified molecules may be rare or absent within the "
                              "budget")
            elif lo == hi and not PROPERTIES[name].integer and EXACT_VALUES.get(name) != lo:
                doubts.append(f"{name}: window {_fmt((lo, hi), name)} has no width: a molecule's {name} is rarely "
                              f"exactly {lo:g}, so verified molecules may be rare or absent within the budget")
        fragment = self.fragment
        if self.contains and not self.scaffold and fragment is None and (
                least := _least_tokens(self.contains)) > LONG_TOKENS:
            doubts.append(f"contains: {self.contains!r} is only matched, not written on the canvas, and takes at "
                          f"least {least} tokens, more than 99 % of the training molecules ({LONG_TOKENS}): verified "
                          "molecules may be rare or absent within the budget")
        if self.scaffold and self.contains and not Chem.MolFromSmiles(self.scaffold).HasSubstructMatch(
                _smarts(self.contains), useChirality=True):
            least = len(tokenize_known(self.scaffold)) + _smarts(self.contains).GetNumAtoms()
            if least > LONG_TOKENS:
                doubts.append(f"contains: beside a scaffold {self.contains!r} is only matched, not written on the "
                              f"canvas, and the two take at least {least} tokens, more than 99 % of the training "
                              f"molecules ({LONG_TOKENS}): verified molecules may be rare or absent within the budget")
        if fragment and self.avoid:
            entry = alert_catalog(self.avoid).GetFirstMatch(Chem.MolFromSmiles(fragment))
            if entry is not None:
                doubts.append(f"{'scaffold' if self.scaffold else 'contains'}: {fragment!r} itself carries the "
                              f"structural alert {entry.GetDescription()} to avoid: only decorations that break it "
                              "verify, and they may be rare or absent within the budget")
        return doubts

    def missed_windows(self, mol: Chem.Mol) -> dict[str, bool]:
        """The requested windows `mol` misses, each mapped to whether its value lies below the window."""
        exact = exact_properties(mol, list(self.windows))
        return {name: exact[name] < lo for name, (lo, hi) in self.windows.items() if not lo <= exact[name] <= hi}


EXACT_VALUES = {"tpsa": 0.0}  # what many molecules' continuous property is exactly: no N or O, no polar surface


def _outside_training(name: str, lo: float, hi: float) -> str | None:
    """'lies outside' when a window holds none of the training molecules' range, 'only touches the edge of' when
    it holds one end of a continuous property's (qed 0.95:1 meets the highest QED at one point), else None."""
    low, high = TRAINING_RANGES[name]
    if hi < low or lo > high:
        return "lies outside"
    if PROPERTIES[name].integer or not (hi == low or lo == high):
        return None
    return None if EXACT_VALUES.get(name) == (low if hi == low else high) else "only touches the edge of"


def _pattern_text(value: str | Chem.Mol | None, label: str) -> str | None:
    """`contains` or `scaffold` as stripped text: a SMARTS query as its SMARTS, a molecule as its SMILES (as if
    typed, so that it is written on the canvas like that text)."""
    if isinstance(value, Chem.Mol) and label == "contains" and any(a.HasQuery() for a in value.GetAtoms()):
        value = Chem.MolToSmarts(value)
    elif isinstance(value, Chem.Mol) and label == "contains":  # explicit hydrogens would be atoms it needs
        value = Chem.RWMol(Chem.RemoveHs(value))
        for atom in value.GetAtoms():  # atom maps would make the text a reaction-style pattern
            atom.SetAtomMapNum(0)
        value = Chem.MolToSmiles(value)
    elif isinstance(value, Chem.Mol):
        value = Chem.MolToSmiles(value)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"{label}: expected text or an RDKit Mol, got {type(value).__name__}")
    if value is not None and len(value.split()) > 1:  # RDKit reads the text after a space as a name
        raise RequestError(f"{label}: {value!r} has a space; RDKit would read only {value.split()[0]!r}"
                           + (" (to require several parts, join them with '.')" * (label == "contains")))
    return None if value is None else value.strip()


def _checked_windows(windows: Mapping | None) -> dict[str, tuple[float, float]]:
    """The requested windows by property name, each checked (`_check_window`); None windows and those that
    constrain nothing are left out."""
    if windows is not None and not isinstance(windows, Mapping):
        raise RequestError(f"windows: expected a dict of property name: (lo, hi), got {type(windows).__name__}")
    checked = {}
    for name, window in (windows or {}).items():
        if window is None:
            continue
        if name not in PROPERTIES:
            raise RequestError(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}")
        if (window := _check_window(name, window)) is not None:
            checked[name] = window
    return checked


def _check_contains(contains: str) -> None:
    """RequestError unless `contains` is SMARTS that some molecule the canvas can write matches."""
    query = Chem.MolFromSmarts(contains) if contains.strip() else None
    if query is None:
        raise RequestError(f"contains: {contains!r} is not a valid SMARTS pattern")
    if problem := unwritable(query) or over_valence(contains) or unmatchable(query):
        raise RequestError(f"contains: {contains!r} can never match: {problem}")
    spelled = Chem.MolFromSmiles(contains)
    if spelled is not None and (problem := rare_motif(spelled)):  # its ring or bond is in every match
        raise RequestError(f"contains: {contains!r} can never match: it has {problem}, which no returned molecule has")
    if spelled is not None and needs_carbamic_acid(spelled, query):
        raise RequestError(f"contains: {contains!r} can never match: only a carbamic acid N-C(=O)OH matches it, which "
                           "loses CO2 and is never returned (a carbamate N-C(=O)O-C is: 'NC(=O)O')")
    # A ring of aromatic atoms under five may lie between aromatic rings, its own bonds single (biphenylene): the
    # pattern 'c1cnc1' matches there, though RDKit spells it as 'C1=CN=C1'.
    fused = spelled is not None and any(len(ring) < 5 and all(query.GetAtomWithIdx(i).GetIsAromatic() for i in ring)
                                        for ring in spelled.GetRingInfo().AtomRings())  # the pattern's own atoms
    if spelled is not None and not fused and not spelled.HasSubstructMatch(query):
        # e.g. Kekulé 'C1=CC=CC=C1': RDKit reads every molecule's benzene rings as aromatic atoms
        raise RequestError(f"contains: {contains!r} can never match: not even the molecule it spells, "
                           f"which RDKit reads as {Chem.MolToSmiles(spelled)!r}; write that instead")


def _canonical_scaffold(scaffold: str) -> str:
    """The canonical SMILES of a scaffold the canvas can decorate; RequestError for one it cannot."""
    mol = Chem.MolFromSmiles(scaffold) if scaffold.strip() else None
    if mol is None:
        raise RequestError(f"scaffold: {scaffold!r} is not a valid SMILES")
    if any(atom.GetAtomicNum() == 0 for atom in mol.GetAtoms()):
        bare = Chem.DeleteSubstructs(mol, Chem.MolFromSmarts("[#0]"))
        raise RequestError(f"scaffold: {scaffold!r} marks attachment points (*), which diffsolve does not take: it "
                           "decorates the scaffold wherever it has a hydrogen to replace; give it without them ("
                           f"{Chem.MolToSmiles(bare)!r}), or ask for the decorated part with contains")
    if any(atom.GetAtomMapNum() for atom in mol.GetAtoms()):  # atom maps (from reaction tools) only name atoms
        mol = Chem.RWMol(mol)
        for atom in mol.GetAtoms():
            if atom.GetAtomMapNum() and atom.GetNumRadicalElectrons():  # '[c:1]': a mapped atom, not a radical
                atom.SetNumRadicalElectrons(0)
                atom.SetNoImplicit(False)
            atom.SetAtomMapNum(0)
        Chem.SanitizeMol(mol)
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)  # a centre the maps alone made chiral is none
    if problem := unwritable(Chem.MolFromSmarts(Chem.MolToSmarts(mol))) or rare_motif(mol):
        raise RequestError(f"scaffold: {scaffold!r} cannot be decorated: {problem}")
    if len(Chem.GetMolFrags(mol)) > 1:
        raise RequestError(f"scaffold: {scaffold!r} has {len(Chem.GetMolFrags(mol))} disconnected pieces; a "
                           f"scaffold is one piece (to require several, pass {scaffold!r} as contains)")
    if not any(atom.GetTotalNumHs() for atom in mol.GetAtoms()):
        raise RequestError(f"scaffold: {scaffold!r} cannot be decorated: no atom has a hydrogen to replace")
    canonical = Chem.MolToSmiles(mol)
    try:
        scaffold_ids(canonical)
    except SmilesError as exc:
        raise RequestError(f"{exc}") from None
    return canonical


def parse_molecule(smiles: str) -> Chem.Mol | None:
    """The molecule, or None when RDKit cannot read it, cannot compute its properties (a SMILES can sanitize
    and still fail inside a descriptor: QED's RemoveHs raised KekulizeException on one generated molecule), or
    reads it only by inventing chemistry (`implausible`)."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or implausible(mol):
        return None
    try:
        exact_properties(mol)
    except ValueError:  # RDKit's MolSanitizeException is one
        return None
    return mol


def implausible(mol: Chem.Mol) -> str | None:
    """Why RDKit's reading of `mol` is not a compound a chemist would accept, or None. RDKit fills a neutral atom
    up to its next allowed valence with hydrogens, so 'CS(C)(C)=O' (five bonds on S) sanitizes as a [SH] of
    valence 6; no MOSES training molecule has a hydrogen on an atom above its default valence (checked on every
    15th of the 1.58M), nor an explicit hydrogen atom ('[H]', '[H][H]' parse too). Nor an aromatic ring of three
    or four atoms with N, O or S in it ('c1nn(C)o1'): 2 of every third MOSES training molecule (528,221) have one,
    against 0.7 % of the benchmark's verified molecules before this rule (squaric acid's ring of four carbons,
    which RDKit also reads as aromatic, stays). Nor a charged atom: the model writes neutral atoms, and RDKit
    reads a nitro group written 'N(=O)=O' or an N-oxide 'O=n1ccccc1' as charged ([N+](=O)[O-]); none of the
    MOSES training molecules has a charge (every fifth checked), 1 of the benchmark's 10,527 verified ones did.
    Nor a triple bond other than C#C and C#N: none of the 1.58M training molecules has one, 1 of the 10,527 had
    C#S. Nor a pentalene (none of the 1.58M). Nor a carbamic acid N-C(=O)OH, which loses CO2 at room
    temperature: 2 of the 1.58M training molecules have one, and asked for `C(=O)[OH]` (five molecules at seeds
    1, 3, 5 and 7) the designer had returned one in 8 of 20."""
    if mol.GetNumHeavyAtoms() == 0 or any(atom.GetAtomicNum() == 1 for atom in mol.GetAtoms()):
        return "hydrogen atoms only or an explicit hydrogen atom"
    table = Chem.GetPeriodicTable()
    for atom in mol.GetAtoms():
        if (atom.GetFormalCharge() == 0 and atom.GetTotalNumHs()
                and atom.GetTotalValence() > table.GetDefaultValence(atom.GetAtomicNum())):
            return f"{atom.GetSymbol()} of valence {atom.GetTotalValence()} with a hydrogen (atom {atom.GetIdx() + 1})"
    charged = [atom for atom in mol.GetAtoms() if atom.GetFormalCharge()]
    if charged:
        charged = max(charged, key=lambda atom: atom.GetFormalCharge())  # the atom written with extra bonds
        return (f"{charged.GetSymbol()} with charge {charged.GetFormalCharge():+d} (atom {charged.GetIdx() + 1}): "
                "RDKit reads its bonds, more than a neutral atom takes, as a charged group (such as a nitro group "
                "or an N-oxide written neutral)")
    if mol.HasSubstructMatch(CARBAMIC_ACID):
        return "a carbamic acid N-C(=O)OH, which loses CO2"
    return rare_motif(mol)


CARBAMIC_ACID = Chem.MolFromSmarts("[#7][CX3](=O)[OX2H1]")


def needs_carbamic_acid(spelled: Chem.Mol, query: Chem.Mol) -> bool:
    """Whether the pattern `query`, spelled as the molecule `spelled`, matches it only through a carbamic acid:
    with every carbamic acid's OH capped by a methyl (a carbamate), it no longer matches."""
    hydroxyls = [match[3] for match in spelled.GetSubstructMatches(CARBAMIC_ACID)]
    if not hydroxyls:
        return False
    capped = Chem.RWMol(spelled)
    for oxygen in hydroxyls:
        capped.GetAtomWithIdx(oxygen).SetNumExplicitHs(0)  # '[OH]' spells its hydrogen
        capped.GetAtomWithIdx(oxygen).SetNoImplicit(False)
        capped.AddBond(oxygen, capped.AddAtom(Chem.Atom(6)), Chem.BondType.SINGLE)
    Chem.SanitizeMol(capped)
    return not capped.HasSubstructMatch(query)


def rare_motif(mol: Chem.Mol) -> str | None:
    """A ring or bond that no MOSES training molecule has (`implausible`), said, or None."""
    return small_heteroaromatic_ring(mol) or unusual_triple_bond(mol) or (
        "a pentalene (two fused five-membered rings of sp2 carbons)" if mol.HasSubstructMatch(PENTALENE) else None)


# Antiaromatic, and in none of the 1.58M MOSES training molecules; a chemist's probe saw one returned
PENTALENE = Chem.MolFromSmarts("[#6X3]1~[#6X3]~[#6X3]2~[#6X3]~[#6X3]~[#6X3]~[#6X3]2~[#6X3]1")


TRIPLE_BONDED = ({"C"}, {"C", "N"})  # the training molecules' triple bonds: C#C and C#N (by pair of elements)


def unusual_triple_bond(mol: Chem.Mol) -> str | None:
    """'a triple bond between C and S (atoms 2 and 3)' for one other than C#C or C#N, else None."""
    for bond in mol.GetBonds():
        ends = (bond.GetBeginAtom(), bond.GetEndAtom())
        if bond.GetBondType() == Chem.BondType.TRIPLE and {a.GetSymbol() for a in ends} not in TRIPLE_BONDED:
            return (f"a triple bond between {ends[0].GetSymbol()} and {ends[1].GetSymbol()} (atoms "
                    f"{ends[0].GetIdx() + 1} and {ends[1].GetIdx() + 1})")
    return None


def small_heteroaromatic_ring(mol: Chem.Mol) -> str | None:
    """'an aromatic ring of 4 atoms with C, N, N, O' when `mol` has one of three or four atoms holding N, O or S,
    its bonds aromatic (`implausible`), else None."""
    rings = mol.GetRingInfo()
    for atom_ring, bond_ring in zip(rings.AtomRings(), rings.BondRings()):
        atoms = [mol.GetAtomWithIdx(i) for i in atom_ring]
        if (len(atom_ring) < 5 and all(mol.GetBondWithIdx(i).GetIsAromatic() for i in bond_ring)
                and any(a.GetAtomicNum() != 6 for a in atoms)):
            return f"an aromatic ring of {len(atom_ring)} atoms with {', '.join(a.GetSymbol() for a in atoms)}"
    return None


# ------------------------------------------------------------------------------------------ structural alerts
# RDKit's FilterCatalog catalogs by name: PAINS (and its families A-C), BRENK, NIH, ZINC, the ChEMBL sets, ALL.
ALERT_CATALOGS = tuple(FilterCatalog.FilterCatalogParams.FilterCatalogs.names)


def _can_grow(mol: Chem.Mol) -> bool:
    """Whether some atom of `mol` could take more bonds (a sulfur at valence 2 or 4), so that a molecule with no
    hydrogen to spare (SO2) is still part of larger ones; CCl4 or CO2 is only itself."""
    table = Chem.GetPeriodicTable()
    return any(atom.GetTotalValence() < max(table.GetValenceList(atom.GetAtomicNum())) for atom in mol.GetAtoms())


def over_valence(pattern: str) -> str | None:
    """Why a pattern that reads as SMILES cannot be in any molecule RDKit accepts: an atom with more bonds than
    RDKit allows it (a neutral nitro nitrogen, 'N(=O)=O'); None when it has no such atom or is not SMILES."""
    mol = Chem.MolFromSmiles(pattern, sanitize=False)
    if mol is None:
        return None
    mol.UpdatePropertyCache(strict=False)
    for problem in Chem.DetectChemistryProblems(mol):
        if problem.GetType() == "AtomValenceException":
            atom = mol.GetAtomWithIdx(problem.GetAtomIdx())
            hint = (" (a nitro group's N is charged, [N+](=O)[O-], which the model never writes)"
                    if atom.GetSymbol() == "N" and not atom.GetFormalCharge() else "")
            return (f"its {atom.GetSymbol()} (atom {atom.GetIdx() + 1}) has more bonds than RDKit allows it{hint}")
    return None


def alert_catalog_names(avoid: str | Sequence[str] | AbstractSet[str] | None) -> tuple[str, ...]:
    """Catalog names as RDKit spells them, in the order given (a set's sorted), without repeats; RequestError for
    unknown ones, and for text or entries that name none (an empty sequence avoids nothing)."""
    if avoid is None:
        return ()
    if isinstance(avoid, str):
        avoid = avoid.split(",")
    elif isinstance(avoid, AbstractSet):
        avoid = sorted(avoid, key=str)
    if not isinstance(avoid, Sequence) or not all(isinstance(name, str) for name in avoid):
        raise RequestError(f"avoid: expected catalog names (text, or a list, tuple or set of text), got {avoid!r}")
    spelled = {name.lower(): name for name in ALERT_CATALOGS}
    names = [name.strip() for name in avoid if name.strip()]
    unknown = [name for name in names if name.lower() not in spelled]
    if unknown or avoid and not names:
        named = f"unknown catalog{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}" if unknown else "empty"
        raise RequestError(f"avoid: {named}; the structural-alert catalogs are {', '.join(ALERT_CATALOGS)}")
    return tuple(dict.fromkeys(spelled[name.lower()] for name in names))


@lru_cache(maxsize=None)
def alert_catalog(names: tuple[str, ...]) -> FilterCatalog.FilterCatalog:
    params = FilterCatalog.FilterCatalogParams()
    for name in names:
        params.AddCatalog(FilterCatalog.FilterCatalogParams.FilterCatalogs.names[name])
    return FilterCatalog.FilterCatalog(params)


def alert_atoms(mol: Chem.Mol, names: tuple[str, ...]) -> list[int]:
    """The atoms of the first structural alert of catalogs `names` that `mol` matches ([] when none does)."""
    entry = alert_catalog(names).GetFirstMatch(mol)
    if entry is None:
        return []
    return sorted({atom for match in entry.GetFilterMatches(mol) for _, atom in match.atomPairs})


class RequestError(ValueError):
    """A malformed or unsatisfiable molecule request."""


class UnlikelyRequestWarning(UserWarning):
    """A request that can be met but rarely is (`MoleculeRequest.unlikely`): a window beyond every training
    molecule, or a pinned fragment that itself carries an alert to avoid."""


# The elements the vocabulary writes, by aromaticity (True: lowercase tokens), as atomic numbers.
WRITABLE = {aromatic: dict(sorted((Chem.GetPeriodicTable().GetAtomicNumber(t.capitalize()), t) for t in SMILES_TOKENS
                                   if t.isalpha() and t.islower() == aromatic)) for aromatic in (False, True)}
CAN_WRITE = (f"the model writes {', '.join(WRITABLE[False].values())} ({', '.join(WRITABLE[True].values())} "
             "aromatic), without charges, isotopes or stereo")


def unwritable(query: Chem.Mol) -> str | None:
    """What a SMARTS query demands that no molecule from this model has (an element outside its vocabulary, a
    charge, an isotope, stereo), or None. Read from RDKit's query trees: AND needs every part, OR one."""
    for atom in query.GetAtoms():
        problem = (f"atom {atom.GetIdx() + 1} has stereo" if atom.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED
                   else _impossible(_query_tree(atom.DescribeQuery()), f"atom {atom.GetIdx() + 1}"))
        if problem:
            return f"{problem}; {CAN_WRITE}"
    for bond in query.GetBonds():
        if bond.GetStereo() != Chem.BondStereo.STEREONONE or bond.GetBondDir() != Chem.BondDir.NONE:
            return f"bond {bond.GetIdx() + 1} has cis/trans stereo; {CAN_WRITE}"
    return None


# Why every molecule containing a pattern has at least so much of a property (`pattern_floors`).
FLOOR_REASONS = {"hbd": "that many of its atoms are hydrogen-bond donors whatever else the molecule holds",
                 "hba": "that many of its atoms are hydrogen-bond acceptors whatever else the molecule holds",
                 "tpsa": "the polar surface its N and O atoms add whatever else the molecule holds",
                 "rings": "its own cycles are the molecule's (an aromatic atom lies in a ring)"}


def _part_floors(query: Chem.Mol, spelled: Chem.Mol | None, decorated: bool) -> dict[str, float]:
    """What every molecule holding a part has at least: its heavy atoms (one more when it must be decorated),
    `pattern_floors`, and when it reads as SMILES (`spelled`) its rings and the weight of its heavy atoms (one
    carbon more when decorated; its hydrogens may go, to ring closures and multiple bonds)."""
    floors = {"heavy_atoms": query.GetNumAtoms() + decorated,
              **{name: floor for name, floor in pattern_floors(query).items() if floor}}
    if spelled is not None:
        floors["rings"] = max(floors.get("rings", 0), spelled.GetRingInfo().NumRings())
        floors["mw"] = sum(atom.GetMass() for atom in spelled.GetAtoms()) + CARBON * decorated
    return floors


def _least_tokens(pattern: str) -> int:
    """The fewest SMILES tokens a molecule containing the SMARTS `pattern` takes: one per atom, or the pattern's
    own when it reads as SMILES (its ring digits and branches too)."""
    atoms = _smarts(pattern).GetNumAtoms()
    spelled = Chem.MolFromSmiles(pattern)
    try:
        return max(atoms, len(tokenize_known(Chem.MolToSmiles(spelled)))) if spelled is not None else atoms
    except SmilesError:
        return atoms


def _floor_reason(name: str, floor: float, label: str) -> str:
    if name in FLOOR_REASONS:
        return f"every molecule containing the {label} has {name} >= {floor:g}: {FLOOR_REASONS[name]}"
    if label.startswith("scaffold") and name in ("heavy_atoms", "mw"):
        return (f"the {label} decorated has at least {name} = {floor:g}"
                + " (its heavy atoms and one carbon more)" * (name == "mw"))
    return f"the {label} alone has {name} = {floor:g}"


def _query_tree(description: str) -> list:
    """RDKit's DescribeQuery text (two spaces of indent per level) as nested [line, children]."""
    root: list = ["", []]
    stack = [(-1, root)]
    for line in description.splitlines():
        depth = (len(line) - len(line.lstrip())) // 2
        node = [line.strip(), []]
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1][1].append(node)
        stack.append((depth, node))
    return root[1][0] if root[1] else ["", []]


def _impossible(node: list, where: str) -> str | None:
    text, children = node
    if not text:
        return None
    name, *rest = text.split()
    if name == "AtomAnd":
        return next(filter(None, (_impossible(child, where) for child in children)), None)
    if name == "AtomOr":
        reasons = [_impossible(child, where) for child in children]
        return reasons[0] if reasons and all(reasons) else None
    if len(rest) < 3 or rest[1:] != ["=", "val"] or not rest[0].lstrip("-").isdigit():
        return None  # a negation, a recursive SMARTS, a count: some writable molecule may match
    value = int(rest[0])
    if name == "AtomType" and value % 1000 not in WRITABLE[value >= 1000]:
        return f"{where} is {Chem.GetPeriodicTable().GetElementSymbol(value % 1000)}{' (aromatic)' * (value >= 1000)}"
    if name == "AtomAtomicNum" and value not in WRITABLE[False]:
        return f"{where} is {Chem.GetPeriodicTable().GetElementSymbol(value)}"
    if name == "AtomFormalCharge" and value:
        return f"{where} has charge {value:+d}"
    if name == "AtomIsotope" and value:
        return f"{where} is the isotope {value}"
    return None


def _most_hydrogens(z: int, aromatic: bool, bonds: float = 0) -> int:
    """The most hydrogens an atom with `bonds` (their orders summed) carries in a returned molecule: none takes
    its valence above the default one (`implausible`), and an aromatic atom has at least two ring bonds, worth
    three for c and two for n. Negative: it has no hydrogen."""
    valence = Chem.GetPeriodicTable().GetDefaultValence(z)
    return valence - {6: 3, 7: 2}.get(z, valence) if aromatic else valence - int(bonds)


# The valences RDKit allows each neutral atom the model writes (S: 2, 4, 6; the others one each).
VALENCES = {z: tuple(Chem.GetPeriodicTable().GetValenceList(z)) for z in WRITABLE[False]}
# What an atom the canvas writes can be, as (atomic number, aromatic, hydrogens).
ATOM_KINDS = frozenset((z, aromatic, h) for aromatic in (False, True) for z in WRITABLE[aromatic]
                       for h in range(_most_hydrogens(z, aromatic) + 1))


def _is_donor(z: int, aromatic: bool, h: int) -> bool:
    """RDKit's Lipinski.NumHDonors atom, uncharged: N or [nH] with a hydrogen (a neutral N has valence 3),
    O or S with exactly one."""
    return h >= 1 if z == 7 else (z in (8, 16) and not aromatic and h == 1)


def _is_acceptor(z: int, aromatic: bool, h: int) -> bool:
    """Sure to be RDKit's Lipinski.NumHAcceptors atom, uncharged: aromatic o and s, O without hydrogen (a neutral
    O has valence 2). The rest depends on the neighbours (an OH of an acid, an amide N, a sulfone S are not; since
    RDKit 2026.09, HBA 2.0.2, nor is an aromatic n with three, as in N-methylpyrrole); F never is."""
    return (aromatic and z in (8, 16)) or (z == 8 and not aromatic and h == 0)


def _query_matches(node: list, universe: frozenset, tests: dict[str, Callable],
                   several: AbstractSet[str] = frozenset()) -> frozenset:
    """The members of `universe` a query atom (its `_query_tree`) can match, where `tests[name](value, member)`
    says whether a member can pass the query feature `name` with `value`; all of them where the query reads a
    feature `tests` lacks (a recursive SMARTS, say), which only makes the answer larger. A member may take
    `several` features' values in turn (a carbon's degree): a negation of one of those narrows nothing."""
    text, children = node
    name, *rest = text.split() or [""]
    if name in ("AtomAnd", "AtomOr"):
        parts = [_query_matches(child, universe, tests, several) for child in children]
        return frozenset.intersection(*parts) if name == "AtomAnd" else frozenset.union(*parts)
    if len(rest) != 3 or rest[1:] not in (["=", "val"], ["!=", "val"]) or not rest[0].lstrip("-").isdigit():
        return universe
    if name not in tests or (rest[1] == "!=" and name in several):
        return universe
    matches = frozenset(member for member in universe if tests[name](int(rest[0]), member))
    return matches if rest[1] == "=" else universe - matches


KIND_TESTS = {
    "AtomType": lambda value, kind: kind[:2] == (value % 1000, value >= 1000),
    "AtomAtomicNum": lambda value, kind: kind[0] == value,
    "AtomHCount": lambda value, kind: kind[2] == value,
    "AtomIsAromatic": lambda value, kind: kind[1] == bool(value),
    "AtomIsAliphatic": lambda value, kind: kind[1] != bool(value),
    # a neutral atom's valence is one RDKit allows it; its neighbours take what its hydrogens leave, and an
    # aromatic atom has at least two (its ring)
    "AtomTotalValence": lambda value, kind: value >= kind[2] and value in VALENCES[kind[0]],
    "AtomExplicitDegree": lambda value, kind: 2 * kind[1] <= value <= max(VALENCES[kind[0]]) - kind[2],
    "AtomTotalDegree": lambda value, kind: 2 * kind[1] <= value - kind[2] <= max(VALENCES[kind[0]]) - kind[2]}


def _atom_kinds(node: list) -> frozenset:
    """The ATOM_KINDS a query atom can match (rings and recursive SMARTS not read)."""
    return _query_matches(node, ATOM_KINDS, KIND_TESTS, several={"AtomTotalValence", "AtomExplicitDegree",
                                                                  "AtomTotalDegree"})


def _smallest_ring_sizes(node: list) -> frozenset:
    """The sizes of the smallest ring an atom matching a query atom can lie in (RDKit's 'r'), 0 for none, up to
    a ring through every atom the canvas holds; what it reads of the query is 'r' alone."""
    sizes = frozenset(range(MAX_SMILES_TOKENS + 1)) - {1, 2}  # a ring has three atoms at least
    return _query_matches(node, sizes, {"AtomMinRingSize": lambda value, size: size == value})


# The least polar surface (RDKit's CalcTPSA, Ertl's table without S and P) a neutral atom of each kind adds, in
# any surroundings: the smallest of the table's entries for it and of the formula RDKit falls back on (N: 30.5 -
# 8.2 per neighbour + 1.5 per hydrogen; O: 28.5 - 8.6 per neighbour + 1.5 per hydrogen). C, S and halogens add none.
LEAST_TPSA = {(7, False, 0): 3.01, (7, False, 1): 12.03, (7, False, 2): 25.3, (7, False, 3): 35.0,
              (7, True, 0): 4.41, (7, True, 1): 15.6,
              (8, False, 0): 9.23, (8, False, 1): 20.23, (8, False, 2): 31.5, (8, True, 0): 11.3}


def _pattern_atom_kinds(atom: Chem.Atom) -> list[tuple[int, bool, int]]:
    """The ATOM_KINDS a pattern's atom can match in a returned molecule: those its query allows (a molecule's atom,
    as in a scaffold: its element and aromaticity, any hydrogens), with no more hydrogens than its bonds in the
    pattern leave room for (a SMARTS bond '=' or '#' counts 2 or 3, any other 1)."""
    if atom.HasQuery():
        kinds = _atom_kinds(_query_tree(atom.DescribeQuery()))
    else:
        kinds = frozenset(k for k in ATOM_KINDS if k[:2] == (atom.GetAtomicNum(), atom.GetIsAromatic()))
    bonds = sum({"=": 2, "#": 3}.get(bond.GetSmarts(), 1) if bond.HasQuery() else bond.GetBondTypeAsDouble()
                for bond in atom.GetBonds())
    return sorted((z, aromatic, h) for z, aromatic, h in kinds if h <= max(0, _most_hydrogens(z, aromatic, bonds))
                  and (aromatic or bonds <= max(VALENCES[z])))  # '[N;X3](=O)=O': four bonds on a neutral N


def unmatchable(query: Chem.Mol) -> str | None:
    """Which atom of a SMARTS query no atom of a returned molecule matches (an aromatic n with two hydrogens, a
    carbon of valence 5 or with five neighbours), or None. Only what the query reads as element, aromaticity,
    hydrogens, valence and degree counts: a query on anything else is taken to match."""
    for atom in query.GetAtoms():
        if not _pattern_atom_kinds(atom):
            return (f"no atom the model writes matches atom {atom.GetIdx() + 1} ({atom.GetSmarts()}): not with "
                    "those hydrogens, that valence or that many neighbours, given its bonds in the pattern (a "
                    "returned molecule's atoms are neutral)")
        if atom.HasQuery() and not _smallest_ring_sizes(_query_tree(atom.DescribeQuery())):
            return (f"atom {atom.GetIdx() + 1} ({atom.GetSmarts()}) asks for a smallest ring no molecule here has "
                    f"(none, or 3 to {MAX_SMILES_TOKENS} atoms)")
    return None


def pattern_floors(pattern: Chem.Mol) -> dict[str, float]:
    """hbd, hba, tpsa and rings that every molecule containing `pattern` has at least: its atoms that are a donor
    (acceptor) in every molecule they match in, the least polar surface its atoms add, and its own independent
    cycles (at least one when it has an aromatic atom). `pattern` is a SMARTS query, or a molecule matched as a
    substructure (a scaffold: element and aromaticity fixed, hydrogens free).
    An aliphatic atom keeps at least its bonds in the pattern (`_pattern_atom_kinds`), so the O of 'C=O' has no
    hydrogen; a lone pattern atom may be the whole molecule (water: no donor)."""
    pieces = len(Chem.GetMolFrags(pattern)) if pattern.GetNumAtoms() else 0
    floors = {"hbd": 0, "hba": 0, "tpsa": 0.0,  # its cycles are the molecule's too (RDKit counts at least as many)
              "rings": pattern.GetNumBonds() - pattern.GetNumAtoms() + pieces}
    for atom in pattern.GetAtoms():
        kinds = _pattern_atom_kinds(atom)
        if kinds:  # an atom no writable atom matches is refused elsewhere (`unmatchable`)
            floors["hbd"] += all(_is_donor(*kind) for kind in kinds)
            floors["hba"] += all(_is_acceptor(*kind) for kind in kinds)
            floors["tpsa"] += min(LEAST_TPSA.get(kind, 0.0) for kind in kinds)
            if all(aromatic for _, aromatic, _ in kinds):  # an aromatic atom lies in a ring
                floors["rings"] = max(floors["rings"], 1)
    return floors


# Bounds on what any molecule on the canvas can have (used to reject windows that cannot be met).
CARBON, BROMINE = 12.011, 79.904  # the lightest and the heaviest atom the model writes
PROPERTY_LIMITS = {"logp": (-30.0, 30.0), "mw": (16.0, MAX_SMILES_TOKENS * 80.0), "qed": (0.0, 1.0),  # CH4: 16.04
                   "tpsa": (0.0, MAX_SMILES_TOKENS * 30.0), "hbd": (0, MAX_SMILES_TOKENS),
                   "hba": (0, MAX_SMILES_TOKENS), "rings": (0, MAX_SMILES_TOKENS // 2),
                   "heavy_atoms": (1, MAX_SMILES_TOKENS)}


def _most_rings(atoms: float) -> float:
    """The most rings `atoms` heavy atoms can hold: a ring is a cycle of three or more atoms, so no more than the
    cycles of the complete graph on them (1 for 3 atoms, 7 for 4, 37 for 5). RDKit's ring count (symmetrized SSSR)
    can exceed bonds - atoms + 1 (tetrahedrane: 4 rings), so that tighter count would not be a bound."""
    if atoms > 8:  # thousands of cycles: more than any ring window can ask for
        return math.inf
    n = int(atoms)
    return sum(math.comb(n, k) * math.factorial(k - 1) // 2 for k in range(3, n + 1))


def _fmt(window: tuple[float, float], name: str | None = None) -> str:
    """'LO:HI'; with the property's `name`, a side at its limit (an open side, once checked) is left empty."""
    low, high = PROPERTY_LIMITS.get(name, (math.nan, math.nan))
    return ("" if window[0] <= low else f"{window[0]:g}") + ":" + ("" if window[1] >= high else f"{window[1]:g}")


def _check_window(name: str, window) -> tuple[float, float] | None:
    """(lo, hi) within PROPERTY_LIMITS; None or an infinite bound is open on that side; None for a window open
    on both sides, which is no condition."""
    if isinstance(window, (str, bytes)):
        raise RequestError(f"{name}: expected a (lo, hi) pair of numbers, got the text {window!r} "
                           "(parse_window reads 'LO:HI')")
    try:
        bounds = list(window)
        if len(bounds) != 2 or any(isinstance(v, (bool, np.bool_, str, bytes)) for v in bounds):
            raise TypeError
        lo, hi = (-math.inf if v is None and k == 0 else math.inf if v is None else float(v)
                  for k, v in enumerate(bounds))
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name}: expected a (lo, hi) pair of numbers (None for an open side), got "
                           f"{reprlib.repr(window)}") from None
    if math.isnan(lo) or math.isnan(hi):
        raise RequestError(f"{name}: window bounds must be numbers, got {_fmt((lo, hi))}")
    if lo > hi:
        raise RequestError(f"{name}: lower bound {lo:g} is above upper bound {hi:g}")
    low, high = PROPERTY_LIMITS[name]
    if hi < low or lo > high:
        raise RequestError(f"{name}: window {_fmt((lo, hi), name)} is outside what any molecule here can have "
                           f"({_fmt((low, high))})")
    if lo == -math.inf and hi == math.inf:  # not merely beyond the limits: those assume the usual canvas
        return None
    lo, hi = max(lo, low), min(hi, high)
    if PROPERTIES[name].integer and math.floor(hi) < math.ceil(lo):
        raise RequestError(f"{name}: window {_fmt((lo, hi))} contains no whole number")
    return lo, hi


@lru_cache(maxsize=64)
def _smarts(pattern: str) -> Chem.Mol:
    return Chem.MolFromSmarts(pattern)


@lru_cache(maxsize=64)
def _smiles_query(smiles: str) -> Chem.Mol:
    return Chem.MolFromSmiles(smiles)


def decorates(mol: Chem.Mol, scaffold: Chem.Mol) -> bool:
    """Whether `mol` is `scaffold` with at least one atom more, each added where a scaffold atom had a hydrogen
    to replace: N-methyl-2-pyridone holds pyridine's ring, but its methyl sits on the nitrogen, which has no
    hydrogen in pyridine, so it is another chemotype (a lactam), not a decorated pyridine."""
    if mol.GetNumHeavyAtoms() <= scaffold.GetNumAtoms():
        return False
    return any(all(mol.GetAtomWithIdx(j).GetDegree() <= atom.GetDegree() + atom.GetTotalNumHs()
                   for atom, j in zip(scaffold.GetAtoms(), match))
               for match in mol.GetSubstructMatches(scaffold, uniquify=False, maxMatches=10_000))


def parse_window(text: str, name: str = "window") -> tuple[float | None, float | None]:
    """'LO:HI' -> (lo, hi); one side may be empty for an open bound ('3:' or ':250' -> None there); for a count
    (rings, hbd, ...) one number V means exactly V."""
    if not isinstance(text, str):
        raise RequestError(f"{name}: expected text 'LO:HI', got {type(text).__name__} {text!r}")
    parts = text.replace("\u2212", "-").split(":")  # a typeset minus sign, as copied from a paper
    count = name in PROPERTIES and PROPERTIES[name].integer
    if len(parts) == 1 and count:
        parts = parts * 2
    if not any(part.strip() for part in parts):
        raise RequestError(f"{name}: give at least one bound, got {text!r}")
    if len(parts) != 2:
        raise RequestError(f"{name}: expected LO:HI{' (or one whole number)' * count}, got {text!r}")
    try:
        lo, hi = (float(part) if part.strip() else None for part in parts)
    except ValueError:
        raise RequestError(f"{name}: expected numbers in LO:HI, got {text!r}") from None
    if any(bound is not None and math.isnan(bound) for bound in (lo, hi)):  # float() reads 'nan'
        raise RequestError(f"{name}: expected numbers in LO:HI, got {text!r} (NaN is not a bound)")
    return lo, hi


def sample_prompts(request: MoleculeRequest, n: int, generator: torch.Generator) -> Tensor:
    """n prompts for `request`: each conditioned property with a window gets a bin overlapping it (drawn
    per canvas, so a wide window is covered), the scaffold when one is requested."""
    conditions = []
    for _ in range(n):
        cond = {}
        for name in CONDITIONED:
            if name in request.windows:
                bins = window_bins(name, request.windows[name])
                cond[name] = bins[int(torch.randint(0, len(bins), (1,), generator=generator))]
        conditions.append(cond)
    return encode_prompts(conditions, [scaffold_ids(request.scaffold)] * n)


MAX_FREE_RUN = 6  # longest free stretch before/after the fragment and per branch slot, around large fragments
MAX_SLOTS = 2  # branch slots per layout
# MOSES SMILES average 35.4 tokens (median 36, 5-95 %: 28-42). Around a small fragment each free stretch may
# grow to 2/3 of what the fragment leaves of that, so that molecules of the usual size fit. Capped at
# MAX_FREE_RUN alone, layouts around `contains="C(=O)N"` averaged 12.7 tokens and MW 250-330 gave no molecule in
# 1,024 canvases; with the growth they average 25 (sulfonamide 28 rather than 18, benzene 36 rather than 19).
TYPICAL_TOKENS = 35
LONG_TOKENS = 45  # 99 % of MOSES training SMILES have at most this many tokens (20,000 drawn at seed 0)


# Free generation's prompts: 100,000 MOSES training molecules drawn at random (`molecule_data.write_prompt_sample`).
PROMPT_SAMPLE = Path(__file__).parent / "moses_prompts.json.gz"


@lru_cache(maxsize=1)
def training_prompts() -> tuple[Tensor, Tensor]:
    """Prompts [N, PROMPT_WIDTH] (property bins and scaffold) and SMILES lengths [N] of the molecules in
    PROMPT_SAMPLE."""
    with gzip.open(PROMPT_SAMPLE, "rt") as f:
        rows = json.load(f)["rows"]
    conditions = [{name: BIN_BASE[name] + row[k] for k, name in enumerate(CONDITIONED)} for row in rows]
    return encode_prompts(conditions, [scaffold_ids(row[4]) for row in rows]), torch.tensor([row[3] for row in rows])


def training_draws(n: int, generator: torch.Generator) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Prompts and layouts for free generation: each canvas is prompted like a training molecule drawn at
    random (`training_prompts`: its property bins and its scaffold) and its EOS is pinned at that molecule's
    SMILES length, padding after it, every position before it free. Unprompted, with a free length, canvases
    settle padding early and molecules run short (the model alone: 29 tokens on average against the
    training set's 35.4, see benchmarks/results/molecule_raw.md), which costs FCD. Development runs (1,000
    unconditioned canvases, seeds 7 and 8, FCD/Test of the first 700 verified molecules): bins and lengths
    3.98 and 4.01, novelty 0.989 and 0.986, 860 and 877 verified; with the scaffolds too 2.87 and 3.04,
    novelty 0.916 and 0.917, 782 and 785 verified."""
    prompts, lengths = training_prompts()
    pick = torch.randint(len(lengths), (n,), generator=generator)
    lengths = lengths[pick, None]
    position = torch.arange(CANVAS)
    return prompts[pick], (position >= lengths, torch.where(position == lengths, EOS, PAD))


def spare_hydrogens(mol: Chem.Mol, keep_bracket_hydrogens: bool) -> list[int]:
    """Per atom, the hydrogens a decoration may replace: all of them, or with `keep_bracket_hydrogens` none on an
    atom written in brackets (a `contains` pattern's '[OH]' or '[nH]' asks for exactly that hydrogen)."""
    return [0 if keep_bracket_hydrogens and (atom.GetNoImplicit() or atom.GetNumExplicitHs())  # [nH]: explicit H
            else atom.GetTotalNumHs() for atom in mol.GetAtoms()]


def fragment_layouts(fragment: str, n: int, generator: torch.Generator, keep_bracket_hydrogens: bool = False
                     ) -> tuple[Tensor, Tensor]:
    """n canvas layouts around `fragment` (SMILES): (pinned [n, CANVAS] bool, values [n, CANVAS]).

    Each writes the fragment's SMILES from a random root atom, with free positions where decorations can
    bond to an atom that has a hydrogen to spare (`spare_hydrogens`): up to MAX_FREE_RUN (more around small
    fragments, see TYPICAL_TOKENS) before the root, up to MAX_SLOTS branch
    slots `(` + free positions + `)` after atoms, and a stretch after the last atom; then EOS and padding,
    pinned. Every layout has at least one free position when the fragment has a hydrogen to spare.
    Free positions are unpinned (`values` there is PAD)."""
    mol = Chem.MolFromSmiles(fragment)
    hydrogens = spare_hydrogens(mol, keep_bracket_hydrogens)
    pinned = torch.zeros(n, CANVAS, dtype=torch.bool)
    values = torch.full((n, CANVAS), PAD)

    def draw(high: int, low: int = 0) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    for r in range(n):
        layout = _layout(mol, fragment, hydrogens, draw)
        for i, token in enumerate(layout):
            if token is not None:
                pinned[r, i], values[r, i] = True, TOKENIZER.token_to_id(token)
        pinned[r, len(layout):] = True
        values[r, len(layout)] = EOS
    return pinned, values


def _layout(mol: Chem.Mol, fragment: str, hydrogens: list[int], draw: Callable[..., int]) -> list[str | None]:
    """One layout of `fragment`: its tokens and None for each free position."""
    roots = [i for i, h in enumerate(hydrogens) if h] or [0]
    root = roots[draw(len(roots) - 1)]
    must_bond_root = False
    try:
        tokens = tokenize_known(Chem.MolToSmiles(mol, rootedAtAtom=root))
        order = [int(i) for i in mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",")]
    except SmilesError:
        # RDKit writes a bracket atom the model lacks (the S of 'S(=O)(=O)N' is [SH]): use the text as given,
        # and bond the first atom to a decoration so that it keeps no such hydrogen.
        root, tokens, order = 0, tokenize_known(fragment), list(range(mol.GetNumAtoms()))
        must_bond_root = True
    spare = dict(enumerate(hydrogens))  # hydrogens left to replace, per atom
    room = MAX_SMILES_TOKENS - len(tokens)
    longest = max(MAX_FREE_RUN, (TYPICAL_TOKENS - len(tokens)) * 2 // 3)
    before = min(draw(longest, int(must_bond_root)), room) if spare[root] else 0
    spare[root] -= bool(before)
    room -= before
    atom_tokens = _atom_tokens(tokens)  # position in `order` -> token index
    sites = _atom_ends(tokens, atom_tokens)  # token index after which a branch may open -> position in `order`
    slots: dict[int, int] = {}  # token index -> free positions in the branch opened after it
    for _ in range(draw(MAX_SLOTS)):
        open_sites = [i for i, k in sites.items() if spare[order[k]] and i not in slots]
        if not open_sites or room < 3:
            break
        site = open_sites[draw(len(open_sites) - 1)]
        slots[site] = min(draw(longest, 1), room - 2)
        spare[order[sites[site]]] -= 1
        room -= slots[site] + 2
    last = len(tokens) - 1
    tail_open = last in sites and last not in slots and spare[order[sites[last]]] > 0
    after = min(draw(longest, 0 if before or slots else 1), room) if tail_open else 0
    if not (before or slots or after) and spare[root] and room:
        before = draw(min(longest, room), 1)
    decorated = {k for k, grown in ((0, before), (sites.get(last), after)) if grown} | {sites[i] for i in slots}
    for k in decorated:  # a pyrrole-type [nH] that gets a substituent gives up its hydrogen: 'n'
        if tokens[atom_tokens[k]] == "[nH]":
            tokens[atom_tokens[k]] = "n"
    layout: list[str | None] = [None] * before
    for i, token in enumerate(tokens):
        layout.append(token)
        if i in slots:
            layout += ["(", *[None] * slots[i], ")"]
    return layout + [None] * after


def _atom_tokens(tokens: list[str]) -> list[int]:
    """The token index of each atom, in order of appearance."""
    return [i for i, t in enumerate(tokens) if t[0].isalpha() or t[0] == "["]


def _atom_ends(tokens: list[str], atoms: list[int]) -> dict[int, int]:
    """{token index after which a branch may open: the atom's order of appearance}: each atom token, or its
    last ring-closure digit when it has some (a branch goes after them)."""
    ends = {}
    for k, i in enumerate(atoms):
        while i + 1 < len(tokens) and (tokens[i + 1].isdigit() or tokens[i + 1].startswith("%")):
            i += 1
        ends[i] = k
    return ends


# ------------------------------------------------------------------------------------------ guidance
class MoleculeGuidance(Guidance):
    """Per-pass chemistry checks on each canvas.

    The leading run of accepted tokens is a SMILES prefix (complete once it reaches an accepted EOS);
    `partialsmiles` checks prefixes and RDKit complete strings. On a fault (an EOS accepted too early, an
    atom over its valence, a ring that cannot be kekulized) the search backtracks: everything from the
    faulty token to the end of the run is re-noised and the model re-completes the valid part before it,
    backing off further each time the same string fails again. A complete molecule that parses but misses
    the request has re-noised the atoms that pull a missed logP/TPSA/donor window the wrong way, or the atoms
    of a structural alert it must avoid (`_mend`), or else is cut at a random point the same way.
    Every draw also leans toward requested logP, TPSA and donor windows (`Lean`, learnt from the molecules the
    canvases settle). A canvas is verified when its argmax decodes to a molecule RDKit sanitizes and the request
    accepts. Chemistry is per string, so these hooks loop over canvases (with a cache), never over tokens.
    """

    def __init__(self, request: MoleculeRequest, generator: torch.Generator | None = None,
                 layouts: tuple[Tensor, Tensor] | None = None, lean: Lean | None = None):
        self.request = request
        self.lean = lean if lean is not None else Lean(request.windows)  # a designer shares one across rounds
        self.layouts = layouts  # (pinned, values) [B, CANVAS] from `fragment_layouts`, or None
        self.generator = generator or torch.Generator().manual_seed(0)
        self.static = torch.zeros(TOKENIZER.get_vocab_size(), dtype=torch.bool)
        self.static[SMILES_IDS] = True
        self.static[[EOS, PAD]] = True
        self._prefix_cache: dict[tuple[tuple[int, ...], bool], int | None] = {}
        self._failures: dict[tuple[tuple[int, ...], bool], int] = {}  # how often each failing string was seen
        self._judged: dict[str, bool | None] = {}  # SMILES -> None (RDKit rejects it) / meets the request
        self._missed: dict[str, dict[str, bool]] = {}  # SMILES -> its missed windows, for the lean (when it leans)
        self._mends: dict[tuple[int, ...], tuple[list[int], bool]] = {}  # see `_mend`
        self._settled: Tensor | None = None  # rows whose accepted tokens form a complete valid molecule

    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        return None if self.layouts is None else (self.layouts[0].to(device), self.layouts[1].to(device))

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor:
        allowed = self.static.to(canvas.device).expand(*canvas.shape, -1).clone()
        allowed[:, 0, [EOS, PAD]] = False  # no empty molecule
        if self.layouts is not None:  # a layout fixes the length: its free positions hold atoms, bonds, digits
            free = ~self.layouts[0].to(canvas.device)
            allowed[..., EOS] &= ~free
            allowed[..., PAD] &= ~free
        return allowed

    def bias(self, canvas: Tensor) -> Tensor | None:
        return self.lean.bias(canvas.device)

    def select(self, rows: Tensor) -> "MoleculeGuidance":
        if self.layouts is None:
            return self
        subset = copy.copy(self)  # shares the chemistry caches
        subset.layouts = (self.layouts[0][rows.cpu()], self.layouts[1][rows.cpu()])
        return subset

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor:
        prefix = accepted.long().cumprod(dim=1).sum(1).tolist()
        ends = molecule_ends(canvas).tolist()
        bad = np.zeros(tuple(accepted.shape), dtype=bool)  # filled row by row here, moved to the device once
        pinned = None if self.layouts is None else self.layouts[0].tolist()
        self._settled = torch.zeros(len(prefix), dtype=torch.bool)
        for r, (row, k, end) in enumerate(zip(canvas.tolist(), prefix, ends)):
            if k == 0:
                continue
            complete = 0 <= end < k  # the accepted run reaches the end of the molecule
            tokens = tuple(row[:end] if complete else row[:k])
            blame = self._check_prefix(tokens, complete)
            if blame is None and not complete and k == len(row):
                blame = k - 1  # the whole canvas settled without an EOS: too long
            if blame is None:
                self._settled[r] = complete
                continue
            # Backtrack: the text before the fault is a valid partial SMILES, so keep it and re-noise from the
            # fault on (through the EOS), stepping further back each time the same string fails again.
            key = (tokens, complete)
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if blame == -1:  # complete and chemically valid, but not what was asked for
                culprits, grow = self._mend(tokens) if failures <= DIRECTED_TRIES else ([], False)
                if pinned is not None:  # pinned fragment atoms are never blamed
                    culprits = [i for i in culprits if not pinned[r][i]]
                # a missed per-atom window: the worst atoms (alternating with growth when that helps too, as for logP)
                if culprits and not (grow and failures % 2 == 0):
                    bad[r, culprits[:failures]] = True
                    continue
                if grow:  # room to grow: the end and past it
                    bad[r, max(0, end - failures):end + 2 + 2 * failures] = True
                    continue
                blame = int(torch.randint(0, len(tokens), (1,), generator=self.generator))  # a random stretch
            start = max(0, blame - 2 * (failures - 1))
            bad[r, start:k] = True
        blamed = torch.from_numpy(bad).to(accepted.device)
        if self.layouts is not None:
            blamed &= ~self.layouts[0].to(accepted.device)
        return blamed & accepted

    def _check_prefix(self, tokens: Sequence[int], complete: bool) -> int | None:
        """None if fine, a token index to blame, or -1 for a valid molecule the request rejects."""
        key = (tuple(tokens), complete)
        if key not in self._prefix_cache:
            self._prefix_cache[key] = self._diagnose(key[0], complete)
        return self._prefix_cache[key]

    def _diagnose(self, tokens: tuple[int, ...], complete: bool) -> int | None:
        import partialsmiles

        if any(ID_TO_TOKEN[t] not in SMILES_TOKENS for t in tokens):
            return next(i for i, t in enumerate(tokens) if ID_TO_TOKEN[t] not in SMILES_TOKENS)
        text = [ID_TO_TOKEN[t] for t in tokens]
        smiles = "".join(text)
        if not smiles:
            return 0
        try:
            partialsmiles.ParseSmiles(smiles, partial=not complete)
        except partialsmiles.Error as exc:
            if complete and exc.idx >= len(smiles):  # something left open at the end: blame its opening
                opened = _unclosed(text)
                if opened is not None:
                    return opened
            return _token_at(text, exc.idx)
        except Exception:  # partialsmiles has no error type for every odd string; RDKit below decides
            pass
        if not complete:
            return None
        judged = self._judge(smiles)
        if judged is not None and self.lean.strength:  # a molecule the canvas settled: the lean learns from it
            self.lean.observe(self._missed[smiles])
        return len(tokens) - 1 if judged is None else None if judged else -1

    def _mend(self, tokens: tuple[int, ...]) -> tuple[list[int], bool]:
        """How to re-noise a valid molecule the request rejects (cached per string, so repeats extend one order):
        (its atom positions, the atom pulling the first missed window furthest the wrong way first, when every
        missed window is a sum over atoms; the atoms of a structural alert to avoid, in random order, when every
        window is met; else []) and whether every miss is a GROWS property below its window."""
        if tokens not in self._mends:
            text = [ID_TO_TOKEN[t] for t in tokens]
            mol = Chem.MolFromSmiles("".join(text))
            atoms = _atom_tokens(text)  # RDKit keeps this atom order
            missed = self.request.missed_windows(mol) if mol is not None else {}
            grow = bool(missed) and all(name in GROWS and below for name, below in missed.items())
            contributions = [atom_contributions(mol, name) for name in missed]
            culprits = []
            readable = mol is not None and mol.GetNumAtoms() == len(atoms)
            if missed and None not in contributions and readable:
                first, below = next(iter(missed.items()))
                shuffled = torch.randperm(len(atoms), generator=self.generator).tolist()  # ties in random order
                order = sorted(shuffled, key=lambda a: contributions[0][a] if below else -contributions[0][a])
                culprits = [atoms[a] for a in order]
            elif not missed and readable and self.request.avoid:  # an alert: its atoms, in random order
                # CHEMBL avoided, 160 canvases, seeds 0/1 (development runs): 44/43 verified molecules against
                # 38/34 when such a molecule is cut at a random point; with logP 2-3 also, 92/80 against 78/73.
                alert = alert_atoms(mol, self.request.avoid)
                culprits = [atoms[alert[i]] for i in torch.randperm(len(alert), generator=self.generator).tolist()]
            self._mends[tokens] = (culprits, grow)
        return self._mends[tokens]

    def _judge(self, smiles: str) -> bool | None:
        """None when RDKit rejects the SMILES, else whether the molecule meets the request (cached)."""
        if smiles not in self._judged:
            mol = parse_molecule(smiles)
            missed = None if mol is None else self.request.missed_windows(mol)
            if missed is not None and self.lean.strength:
                self._missed[smiles] = missed
            self._judged[smiles] = None if mol is None else (
                not missed and next(self.request.structure_misses(mol), None) is None)
        return self._judged[smiles]

    def verify(self, canvas: Tensor) -> Tensor:
        """Rows whose argmax is a molecule the request accepts *and* whose own tokens have settled into a
        complete, valid molecule (so a lucky argmax of a half-noised canvas does not end the search)."""
        verified = torch.tensor([smiles is not None and bool(self._judge(smiles)) for smiles in decode(canvas)],
                                dtype=torch.bool)
        if self._settled is not None and len(self._settled) == len(verified):
            verified &= self._settled
        return verified.to(canvas.device)


# A rejected molecule gets this many directed re-noisings (worst atoms, or its end to grow), then random stretches.
# logP 5-6.5, 5 molecules, seeds 0-3 (before `Lean`): 440, 664, 264, 432 canvases; with 3 tries and no growth for
# logP 880, 696, 296, 464.
DIRECTED_TRIES = 6
GROWS = ("mw", "heavy_atoms", "logp")  # properties that a longer molecule tends to raise


def atom_contributions(mol: Chem.Mol, name: str) -> list[float] | None:
    """Per heavy atom, its share of property `name` (hydrogens counted with their atom), for the properties that
    are sums over atoms (Crippen logP, TPSA, H-bond donors); None for the others."""
    if name == "tpsa":
        return list(rdMolDescriptors._CalcTPSAContribs(mol))
    if name == "hbd":  # RDKit's donor count is the number of atoms matching this pattern
        donors = {match[0] for match in mol.GetSubstructMatches(Lipinski.HDonorSmarts)}
        return [float(atom in donors) for atom in range(mol.GetNumAtoms())]
    if name != "logp":
        return None
    with_h = Chem.AddHs(mol)  # hydrogens are appended after the heavy atoms
    contributions = [c for c, _ in rdMolDescriptors._CalcCrippenContribs(with_h)]
    per_atom = contributions[:mol.GetNumAtoms()]
    for atom in list(with_h.GetAtoms())[mol.GetNumAtoms():]:
        per_atom[atom.GetNeighbors()[0].GetIdx()] += contributions[atom.GetIdx()]
    return per_atom


def token_shares(smiles: Sequence[str]) -> dict[str, list[float]]:
    """Per atom token of the molecules' canonical SMILES: [how many atoms it wrote, then its mean share of each
    LEANED property (`atom_contributions`)]. What `TOKEN_SHARES` holds for MOSES training molecules."""
    totals: dict[str, list[float]] = {}
    for text in smiles:
        canonical = Chem.MolToSmiles(Chem.MolFromSmiles(text))
        mol = Chem.MolFromSmiles(canonical)  # its atoms in the order the canonical SMILES writes them
        tokens = tokenize_known(canonical)
        shares = [atom_contributions(mol, name) for name in LEANED]
        for atom, position in enumerate(_atom_tokens(tokens)):
            row = totals.setdefault(tokens[position], [0.0] * (1 + len(LEANED)))
            row[0] += 1
            for k, share in enumerate(shares):
                row[1 + k] += share[atom]
    return {token: [row[0], *(round(v / row[0], 4) for v in row[1:])] for token, row in sorted(totals.items())}


def measure_token_shares(n: int = 20_000, seed: int = 0) -> dict[str, list[float]]:
    """`token_shares` of n MOSES training molecules drawn at random (needs the molsets wheel)."""
    from .molecule_data import read_moses

    train = read_moses("train")
    return token_shares([train[i] for i in np.random.default_rng(seed).choice(len(train), n, replace=False)])


LEANED = ("logp", "tpsa", "hbd")  # the properties that are sums over atoms (`atom_contributions`)
# token_shares of MOSES training molecules: measure_token_shares(20_000, seed=0), 2026-12-07.
TOKEN_SHARES: dict[str, list[float]] = {  # token: [atoms, logP, TPSA, donors per atom]
    "Br": [658, 0.8456, 0.0, 0.0], "C": [132665, 0.1503, 0.0, 0.0], "Cl": [2424, 0.6895, 0.0, 0.0],
    "F": [6193, 0.4202, 0.0, 0.0], "N": [29500, -0.3778, 10.7094, 0.6104], "O": [41761, -0.1153, 14.9646, 0.0462],
    "S": [3657, 0.2481, 0.0, 0.0], "[nH]": [2278, -0.1097, 15.79, 1.0], "c": [179421, 0.2536, 0.0, 0.0],
    "n": [27100, -0.3239, 10.8862, 0.0], "o": [3228, 0.1552, 13.14, 0.0], "s": [3502, 0.6237, 0.0, 0.0]
}
LEAN_STEP = 0.05  # the most misses push a strength in one pass (hits pull back up to HIT_WEIGHT times it)
# A molecule inside the window pulls back as much as four missing it below push: the strength leans toward where
# about one molecule in five lands inside (logP 5-6.5, seeds 0-3: 72, 72, 40, 40 canvases for 5 molecules, 12 of the 20
# with Cl or Br; at one, where half land inside, 72, 72, 40, 72 and 14 of 20; at nine 72 each, 14 of 20).
HIT_WEIGHT = 4.0
LEAN_LIMIT = 10.0  # the largest strength: a token one standard deviation above the mean share gains 10 logits


@lru_cache(maxsize=1)
def _lean_directions() -> Tensor:
    """[len(LEANED), V]: each atom token's typical share of each property, standardized over the atoms of MOSES
    (so a strength means the same for logP, TPSA and donors); 0 for every other token."""
    ids = [TOKENIZER.token_to_id(token) for token in TOKEN_SHARES]
    table = torch.tensor(list(TOKEN_SHARES.values()), dtype=torch.float64)
    count, shares = table[:, :1], table[:, 1:]
    mean = (count * shares).sum(0) / count.sum()
    std = ((count * (shares - mean) ** 2).sum(0) / count.sum()).sqrt().clamp(min=1e-12)
    directions = torch.zeros(len(LEANED), TOKENIZER.get_vocab_size(), dtype=torch.float64)
    directions[:, ids] = ((shares - mean) / std).T
    return directions.float()


class Lean:
    """Leans every draw toward requested windows of LEANED properties: logits + strength x each atom token's
    typical share of the property (`_lean_directions`; bonds, digits and the end stay at 0). Roughly a tilt
    p(x) exp(s f(x)) of the model's molecules, f their standardized property less its atoms' mean share (so a
    strength also nudges size a little), applied per position each pass: it reaches windows the model rarely
    samples, such as logP 5-6.5, without retraining.
    Each strength starts at 0 and moves once a pass, by LEAN_STEP x (the share of the molecules settled since the
    last pass that missed the window below, less the share that missed it above), then back toward 0 (never
    past) by LEAN_STEP x HIT_WEIGHT x the share inside it. So it grows only while misses on one side outweigh
    HIT_WEIGHT times the hits: a window the model already meets (donors 0-1) stays near 0, and one beyond its
    molecules (logP 5-6.5) leans harder toward the balance point where one molecule in five lands in it. The
    molecules are those the canvases settle, each distinct string once per round (not the argmax of a canvas
    still half noise). One per request, shared by its rounds. It reaches logP windows mostly through Cl, Br and
    thiophenes, the atoms that raise logP most."""

    def __init__(self, windows: Mapping[str, tuple[float, float]]):
        self.strength = {name: 0.0 for name in LEANED if name in windows}
        # since the last update, per property: misses (+1 below, -1 above), hits, molecules
        self._seen = {name: [0.0, 0, 0] for name in self.strength}
        self._bias: tuple[tuple[float, ...], Tensor] | None = None  # the last bias made, for its strengths

    def observe(self, missed: Mapping[str, bool]) -> None:
        """A valid molecule's missed windows (name: below), as `MoleculeRequest.missed_windows` gives them."""
        for name, seen in self._seen.items():
            if name in missed:
                seen[0] += 1.0 if missed[name] else -1.0
            else:
                seen[1] += 1
            seen[2] += 1

    def update(self) -> None:
        """Move each strength by what was observed since the last update: the net misses push it, the hits pull
        it back toward 0 (never past)."""
        for name, (misses, hits, molecules) in self._seen.items():
            if molecules:
                value = self.strength[name] + LEAN_STEP * misses / molecules
                back = LEAN_STEP * HIT_WEIGHT * hits / molecules  # toward 0, never past it
                value = max(value - back, 0.0) if value > 0 else min(value + back, 0.0)
                self.strength[name] = max(-LEAN_LIMIT, min(LEAN_LIMIT, value))
                self._seen[name] = [0.0, 0, 0]

    def bias(self, device: torch.device) -> Tensor | None:
        """Updates the strengths, then the [1, 1, V] logit bias, or None while every strength is 0."""
        self.update()
        key = tuple(self.strength.get(name, 0.0) for name in LEANED)
        if not any(key):
            return None
        if self._bias is None or self._bias[0] != key or self._bias[1].device != device:
            self._bias = key, (torch.tensor(key) @ _lean_directions()).to(device)[None, None]
        return self._bias[1]


def _unclosed(tokens: list[str]) -> int | None:
    """The token that opened a ring or a branch never closed (the latest such), or None."""
    open_rings: dict[str, int] = {}
    branches: list[int] = []
    for i, token in enumerate(tokens):
        if token.isdigit() or token.startswith("%"):
            if token in open_rings:
                del open_rings[token]
            else:
                open_rings[token] = i
        elif token == "(":
            branches.append(i)
        elif token == ")" and branches:
            branches.pop()
    candidates = list(open_rings.values()) + branches
    return max(candidates) if candidates else None


def _token_at(tokens: list[str], char_index: int) -> int:
    """Index of the token covering character `char_index` of "".join(tokens) (the last one past the end)."""
    end = 0
    for i, token in enumerate(tokens):
        end += len(token)
        if char_index < end:
            return i
    return len(tokens) - 1
