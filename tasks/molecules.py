"""Molecules on the canvas: atom-level SMILES, conditioned on property bins and an optional scaffold.

Training shows each condition (each property bin, the scaffold) with probability 1/2, so one model serves
free generation and every combination of conditions (the encodings: `molecule_canvas`; what may be asked:
`molecule_request`).

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
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rdkit import Chem
from rdkit.Chem import Lipinski, rdMolDescriptors

from ..core import DiffusionGemma, Guidance, ModelConfig
from ..core.training import Batch, cached_training_set
from .molecule_canvas import (BIN_BASE, BOS, CANVAS, CONDITIONED, EOS, ID_TO_TOKEN, IS_SMILES, MAX_SCAFFOLD_TOKENS,
                              PAD, PROMPT_WIDTH, SCAFFOLD, SMILES_IDS, TOKENIZER, UNSPECIFIED, decode, encode_prompts,
                              molecule_ends, scaffold_ids, window_bins)
from .molecule_chemistry import alert_atoms, parse_molecule, spare_hydrogens
from .molecule_data import MAX_SMILES_TOKENS, SMILES_TOKENS, SmilesError, bin_index, rdkit_quiet, tokenize_known
from .molecule_request import MoleculeRequest


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
