"""`MoleculeDesigner`: conditioned, chemistry-guided diffusion; only RDKit-verified molecules come back."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rdkit import Chem

from ..core import (DiffusionGemma, FinishClock, arguments, child_generator, generate, guided_config, progress_bar,
                    released_config, one_canvas, weights_digest)
from ..tasks import molecules as task
from ..tasks.molecule_acceptance import FILE as ACCEPTANCE_FILE
from ..tasks.molecule_acceptance import Acceptance
from ..tasks.molecule_chemistry import parse_molecule
from ..tasks.molecule_data import PROPERTIES, compute_properties, rdkit_quiet
from ..tasks.molecule_known import training_molecules
from ..tasks.molecule_request import MAX_RING_SIZE, MoleculeRequest, RequestError, UnlikelyRequestWarning
from ..tasks.text import plural
from .checkpoints import Pretrained

if TYPE_CHECKING:
    from PIL import Image

# Default canvas budget: BUDGET_PER_MOLECULE per requested molecule plus BUDGET_BASE. Requests in the tail of the
# training distribution need the headroom: logP 5-6.5 (rings of at most 7 atoms, directed re-noising) took 264-664
# canvases for 5 molecules at seeds 0-3.
BUDGET_PER_MOLECULE = 200
BUDGET_BASE = 256
MAX_DRAWN = 48  # 12 rows of 4: a grid still readable on one screen
CELL = (260, 220)  # pixels of one drawn molecule
SHORT_NAMES = {"logp": "logP", "mw": "MW", "qed": "QED", "tpsa": "TPSA", "hbd": "HBD", "hba": "HBA",
               "rings": "rings", "heavy_atoms": "atoms"}  # legends of drawn molecules
LEGEND_FORMATS = {"logp": ".2f", "mw": ".0f", "qed": ".2f", "tpsa": ".0f"}  # the counts are whole numbers
LEGEND_PER_LINE = 3  # properties per legend line: a 260-pixel cell holds about three


def default_budget(n: int) -> int:
    return BUDGET_PER_MOLECULE * n + BUDGET_BASE


@dataclass
class Molecule:
    """One returned molecule: canonical `smiles`, the RDKit `mol`, every property RDKit computed, `verified`
    (always True for what the designer returns: it sanitizes and meets the request) and the `passes` of its
    canvas. `to_dict(names)` for JSON or pandas."""

    smiles: str  # canonical
    mol: Chem.Mol = field(repr=False)
    properties: dict[str, float]  # every property diffsolve knows, computed by RDKit
    verified: bool  # sanitizes and meets every requested condition (always True for returned molecules)
    passes: int  # denoising passes of the canvas that produced it

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        """smiles, verified, the properties (all, or those named: a list, or one name) and passes, for JSON or a
        pandas row (`mol` stays out: an RDKit object)."""
        names = [names] if isinstance(names, str) else names
        if names is not None and (not isinstance(names, Sequence) or any(n not in self.properties for n in names)):
            raise RequestError(f"names: expected property names among {', '.join(self.properties)}, got "
                                    f"{names!r}")
        props = self.properties if names is None else {k: self.properties[k] for k in names}
        return {"smiles": self.smiles, "verified": self.verified, **props, "passes": self.passes}


@dataclass
class DesignResult:
    """What `generate` found: the `molecules` (a list: index it, iterate it, len() it), how many were `requested`,
    the `canvases` denoised in all, the `seed` that repeats the run, and why samples were left out (`known`,
    `atypical`, `rejected`, `misses`). `draw()` a grid picture, shown in a notebook."""

    molecules: list[Molecule]
    requested: int
    canvases: int  # canvases denoised
    seconds: float
    exhausted: bool  # the budget ran out before `requested` molecules were found
    seed: int = 0  # the seed used (drawn at random when none was given): the same request and seed repeat the run
    known: int = 0  # verified samples left out as MOSES training molecules (`novel`; repeats counted each time)
    atypical: int = 0  # verified samples left out by the training-likeness acceptance (`match_training`; the same)
    rejected: int = 0  # canvases that ended on a valid molecule missing the request
    misses: dict[str, int] = field(default_factory=dict)  # what those missed, in words, most often first

    def missed(self, most: int = 3) -> str:
        """What the canvases' valid molecules missed most often (for when the budget ran out): '612 canvases ended
        on a valid molecule missing the request (hbd above 0 in 612, no [OH] in 34)'; '' when none did."""
        if not self.rejected:
            return ""
        common = sorted(self.misses.items(), key=lambda item: -item[1])[:most]
        return (f"{plural(self.rejected, 'canvas', 'canvases')} ended on a valid molecule missing the request ("
                + ", ".join(f"{what} in {count}" for what, count in common)
                + (", ..." * (len(self.misses) > most)) + ")")

    def __repr__(self) -> str:
        """One line however many molecules there are (a notebook shows it over the grid: `_repr_html_`)."""
        shown = ", ".join(m.smiles for m in self.molecules[:3]) + (
            f", ... ({len(self) - 3} more)" if len(self) > 3 else "")
        tried = plural(self.canvases, "canvas", "canvases")
        return (f"DesignResult({len(self)}/{self.requested} molecules from {tried} in {self.seconds:.1f} s, "
                f"seed={self.seed}{', budget exhausted' * self.exhausted}: [{shown}])")

    def _repr_html_(self) -> str | None:
        """What a notebook shows: the one-line repr over `draw()`'s grid; None (the repr alone) when nothing was
        found."""
        if not self.molecules:
            return None
        import base64
        import html
        import io

        png = io.BytesIO()
        self.draw().save(png, format="PNG")
        return (f"<p><code>{html.escape(repr(self))}</code></p>"
                f"<img src='data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}'>")

    def __len__(self) -> int:
        return len(self.molecules)

    def __iter__(self) -> Iterator[Molecule]:
        return iter(self.molecules)

    def __getitem__(self, i: int) -> Molecule:
        return self.molecules[i]

    def draw(self, properties: Sequence[str] = ("logp", "mw", "qed"), *, limit: int = MAX_DRAWN, per_row: int = 4,
             svg: bool = False, highlight: Sequence[Chem.Mol] = ()) -> Image.Image | str:
        """A grid picture of the first `limit` molecules, `per_row` to a row, each labelled with its number (its
        place in the result, from 1) and `properties` (three to a line): a PIL image (it displays in a notebook;
        `.save("grid.png")`), or with `svg=True` the SVG text. `highlight`: query molecules (such as a request's
        `substructures()`) whose first match in each molecule is drawn highlighted. Drawn by RDKit's MolDraw2D
        itself, so RDKit's notebook hooks (IPythonConsole) do not change what comes back. Bad arguments raise
        RequestError."""
        import io

        from PIL import Image
        from rdkit.Chem.Draw import rdMolDraw2D

        with arguments.raised_as(RequestError):
            limit, per_row = arguments.whole(limit, "limit", 1), arguments.whole(per_row, "per_row", 1)
            svg = arguments.flag(svg, "svg")
        names = [properties] if isinstance(properties, str) else properties
        if not isinstance(names, Sequence) or any(name not in SHORT_NAMES for name in names):
            raise RequestError(f"properties: expected names among {', '.join(SHORT_NAMES)}, got {properties!r}")
        if not isinstance(highlight, Sequence) or any(not isinstance(query, Chem.Mol) for query in highlight):
            raise RequestError(f"highlight: expected a list of RDKit query molecules, got {highlight!r:.80}")
        if not self.molecules:
            raise RequestError("nothing to draw: no molecule was found")
        drawn = self.molecules[:limit]
        per_row = min(per_row, len(drawn))
        rows = -(-len(drawn) // per_row)
        lines = max(1, -(-len(names) // LEGEND_PER_LINE))
        cell = (CELL[0], CELL[1] + 14 * (lines - 1))  # room for the legend's extra lines
        canvas = rdMolDraw2D.MolDraw2DSVG(cell[0] * per_row, cell[1] * rows, *cell) if svg else \
            rdMolDraw2D.MolDraw2DCairo(cell[0] * per_row, cell[1] * rows, *cell)
        atoms = [_highlighted(m.mol, highlight) for m in drawn]
        bonds = [[bond.GetIdx() for bond in m.mol.GetBonds()
                  if bond.GetBeginAtomIdx() in marked and bond.GetEndAtomIdx() in marked]
                 for m, marked in zip(drawn, map(set, atoms))]
        canvas.DrawMolecules([m.mol for m in drawn], legends=[_legend(i, m, names) for i, m in enumerate(drawn, 1)],
                             highlightAtoms=atoms, highlightBonds=bonds)
        canvas.FinishDrawing()
        return canvas.GetDrawingText() if svg else Image.open(io.BytesIO(canvas.GetDrawingText()))

    def to_dict(self) -> dict:
        return {"molecules": [m.to_dict() for m in self.molecules], "requested": self.requested,
                "canvases": self.canvases, "seconds": self.seconds, "exhausted": self.exhausted, "seed": self.seed,
                "known": self.known, "atypical": self.atypical, "rejected": self.rejected, "misses": self.misses}


def _legend(number: int, molecule: Molecule, names: Sequence[str]) -> str:
    values = [f"{SHORT_NAMES[name]} {molecule.properties[name]:{LEGEND_FORMATS.get(name, '.0f')}}" for name in names]
    lines = ["  ".join(values[i:i + LEGEND_PER_LINE]) for i in range(0, len(values), LEGEND_PER_LINE)] or [""]
    return "\n".join([f"{number}.  {lines[0]}", *lines[1:]])


def _highlighted(mol: Chem.Mol, queries: Sequence[Chem.Mol]) -> list[int]:
    """The atoms of each query's first match in `mol` (a verified molecule holds every one of its request's)."""
    return sorted({atom for query in queries for atom in mol.GetSubstructMatch(query)})


class DesignInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped `design`/`generate`: `result` holds the molecules found until then (rounds cut short count
    no canvases)."""

    def __init__(self, result: DesignResult):
        super().__init__(f"stopped with {len(result)}/{result.requested} molecules from {result.canvases} canvases")
        self.result = result

    def __reduce__(self):  # pickled and copied with its result (multiprocessing, joblib), not its message
        return type(self), (self.result,)


GUIDED_PASSES = 96


class MoleculeDesigner(Pretrained):
    """Generate molecules with a DiffusionGemma model trained on MOSES.

    Each canvas is prompted with property bins matching the requested windows and the scaffold; with
    `guided=True` the scaffold (or a `contains` pattern that reads as SMILES) is pinned on the canvas in a
    layout drawn per canvas, and while it is denoised, `partialsmiles`/RDKit check its SMILES and the tokens
    at fault are re-noised;
    every molecule is then re-checked by RDKit against the request, and duplicates are dropped.
    `guided=False` is the model alone (the checkpoint's own sampler settings); its molecules are still verified
    before return. `max_steps` caps the denoising passes per canvas (default: 96 guided, the checkpoint's own
    setting unguided). `training_prior` (guided free generation: requests without windows or a pinned fragment):
    each canvas is prompted with the property bins and the scaffold of a random MOSES training molecule and takes its
    length (`task.training_draws`), so that the molecules follow the training distribution; requests with windows
    set the bins from them. `match_training` (free generation with the training prior): each verified molecule is
    kept with a probability that pulls the output toward the MOSES distribution (`molecule_acceptance`; the
    checkpoint's acceptance.safetensors, fitted to its own molecules; off when the checkpoint has none).
    `novel`: molecules of the MOSES training set are left out (`molecule_known`; 1 % of novel ones too).
    """

    CHECKPOINT, TOKENIZER, CANVAS = "molecules", task.TOKENIZER, task.CANVAS

    def __init__(self, model: DiffusionGemma, *, guided: bool = True, max_steps: int | None = None,
                 canvases_per_round: int = 128, training_prior: bool = True, match_training: bool = True,
                 novel: bool = True):
        self.check_checkpoint(model)
        self.model = model
        self.guided = guided = arguments.flag(guided, "guided")
        training_prior, match_training = arguments.flag(training_prior, "training_prior"), \
            arguments.flag(match_training, "match_training")
        novel = arguments.flag(novel, "novel")
        max_steps = None if max_steps is None else arguments.steps(max_steps)
        # Guided canvases sample cooler than the released schedule (0.8 -> 0.4): accepted tokens persist, so
        # each poorly sampled token costs a backtrack. Too cool narrows the molecules: on 1,000 unconditioned
        # canvases 0.5 -> 0.25 returned 638 verified (0.3 -> 0.1: 579, 0.8 -> 0.4: 545) with FCD/Test 10.0
        # (12.2, 9.8) and 1.95 rings per molecule (1.72, 2.05; MOSES 2.6).
        # 96 passes, not 48: on 500 unconditioned canvases (development run) 391 verified molecules against 330,
        # FCD to 10,000 training molecules 10.6 against 11.4 (benchmarks/molecules.py on 10,000 canvases: 7,703
        # verified against 6,435, FCD/Test 8.1 against 8.6). At 96 passes the temperature still stands
        # (development runs, 1,000 canvases, seeds 7 and 8, FCD to training molecules): 0.6 -> 0.3 returned 782 and
        # 770 verified against 791 and 797, FCD 9.1 and 9.6 against 9.5 and 9.7; 0.4 -> 0.2 (seed 7) 769, FCD 9.9.
        # The model alone samples with the checkpoint's own settings (its generation_config.json).
        base = guided_config(t_max=0.5, t_min=0.25, max_denoising_steps=GUIDED_PASSES) if guided \
            else released_config(model)
        self.config = replace(base, max_denoising_steps=max_steps or base.max_denoising_steps, drop_finished=True,
                              eos_token_id=task.EOS, pad_token_id=task.PAD, **one_canvas(task.CANVAS))
        self.canvases_per_round = arguments.whole(canvases_per_round, "canvases_per_round", 1)
        if self.canvases_per_round > arguments.MAX_CANVASES:  # a round is one batch, all in memory at once
            raise ValueError(f"canvases_per_round must be at most {arguments.MAX_CANVASES} (a round is one batch, "
                             f"all in memory at once), got {self.canvases_per_round}")
        self.training_prior = training_prior
        self.acceptance = _acceptance_of(model) if match_training else None
        self.known = training_molecules() if novel else None

    def __repr__(self) -> str:
        return (f"MoleculeDesigner({self.model.source or 'model'}, {'guided' if self.guided else 'model only'}, "
                f"max_steps={self.config.max_denoising_steps}, canvases_per_round={self.canvases_per_round}, "
                f"training_prior={self.training_prior}, match_training={self.acceptance is not None}, "
                f"novel={self.known is not None})")

    def generate(self, n: int, *, contains: str | Chem.Mol | None = None, scaffold: str | Chem.Mol | None = None,
                 logp: tuple[float, float] | None = None, mw: tuple[float, float] | None = None,
                 qed: tuple[float, float] | None = None, tpsa: tuple[float, float] | None = None,
                 hbd: tuple[float, float] | None = None, hba: tuple[float, float] | None = None,
                 rings: tuple[float, float] | None = None, heavy_atoms: tuple[float, float] | None = None,
                 max_ring_size: int | None = MAX_RING_SIZE, avoid: str | Sequence[str] | set[str] | None = None,
                 seed: int | None = None, budget: int | None = None,
                 on_molecule: Callable[[Molecule], None] | None = None,
                 on_round: Callable[[int, int], None] | None = None,
                 on_pass: Callable[[int], None] | None = None, progress: bool = False) -> DesignResult:
        """Up to `n` distinct verified molecules. Windows are inclusive (lo, hi) tuples; `contains` is SMARTS (or
        an RDKit query molecule); `scaffold` a SMILES (or an RDKit molecule) the molecule must contain;
        `max_ring_size` rules out larger rings (default 7, as in the training data; None allows any size).
        `avoid` names RDKit structural-alert catalogs (e.g. ("PAINS", "BRENK"); `ALERT_CATALOGS` lists them) that
        no returned molecule may match.
        `budget` caps the canvases tried (default `default_budget(n)`: 200n + 256); when it runs out the result
        holds what was found and `exhausted` is set. `progress=True` shows a progress bar of molecules found and
        canvases tried (on stderr, or a widget in a notebook with ipywidgets), redrawn every denoising pass.
        `on_round(canvases tried, molecules found)` is called after each round of canvases, `on_pass(k)` after
        pass k of a round (a round takes up to `max_steps` passes).
        Raises `RequestError` for malformed or unsatisfiable requests, before any work."""
        request = MoleculeRequest.parse(
            {"logp": logp, "mw": mw, "qed": qed, "tpsa": tpsa, "hbd": hbd, "hba": hba, "rings": rings,
             "heavy_atoms": heavy_atoms}, contains=contains, scaffold=scaffold, max_ring_size=max_ring_size,
            avoid=avoid)
        return self.design(n, request, seed=seed, budget=budget, on_molecule=on_molecule, on_round=on_round,
                           on_pass=on_pass, progress=progress)

    @rdkit_quiet
    @torch.no_grad()
    def design(self, n: int, request: MoleculeRequest, *, seed: int | None = None, budget: int | None = None,
               on_molecule: Callable[[Molecule], None] | None = None,
               on_round: Callable[[int, int], None] | None = None, on_pass: Callable[[int], None] | None = None,
               progress: bool = False) -> DesignResult:
        """`generate` with a parsed `MoleculeRequest` (the CLI builds one from its options)."""
        if not isinstance(request, MoleculeRequest):
            raise RequestError(f"request: expected a MoleculeRequest (MoleculeRequest.parse builds one), got "
                                    f"{type(request).__name__}")
        request = request.checked()  # one built by hand has not been through parse's checks
        with arguments.raised_as(RequestError):
            n = arguments.whole(n, "the number of molecules", 1)
            budget = default_budget(n) if budget is None else arguments.whole(budget, "budget", 1)
            # drawn apart from torch's global generator, which a notebook's other code may be seeding
            seed = secrets.randbelow(2**31) if seed is None else arguments.seed(seed)
            arguments.callback(on_molecule, "on_molecule")
            arguments.callback(on_round, "on_round")
            arguments.callback(on_pass, "on_pass")
            progress = arguments.flag(progress, "progress")
        request.check_count(n)
        for message in request.unlikely():
            arguments.warn_caller(message, UnlikelyRequestWarning)
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        found: dict[str, Molecule] = {}
        tried = known = atypical = 0
        rejected, misses = 0, Counter()  # canvases that ended on a valid molecule missing the request; what it missed
        free = self.guided and self.training_prior and not request.windows and not request.fragment
        lean = task.Lean(request.windows)  # learnt over the request's rounds
        interrupted = None

        def outcome(exhausted: bool) -> DesignResult:
            return DesignResult(list(found.values()), n, tried, time.perf_counter() - began, exhausted, seed, known,
                                atypical, rejected, dict(misses.most_common()))

        try:
            with progress_bar(progress, n, "molecules", "molecule") as bar:

                def after_pass(step: int) -> None:
                    if progress:  # a round takes many seconds: the bar says it is under way
                        bar.set_postfix(canvases=f"{tried}/{budget}", round_pass=step)
                    if on_pass is not None:
                        on_pass(step)

                while len(found) < n and tried < budget:
                    # a round costs about the same number of passes at any size: size it to what is still missing
                    rows = min(self.canvases_per_round, budget - tried, max(32, 8 * (n - len(found))))
                    try:
                        molecules, left_known, left_atypical, missed = self._round(request, rows, free, generator,
                                                                                   found, lean, after_pass)
                    except _RoundInterrupted as stop:  # the canvases that had stopped count; then it stops
                        molecules, left_known, left_atypical, missed, rows = stop.results
                        interrupted = stop
                    tried, known, atypical = tried + rows, known + left_known, atypical + left_atypical
                    rejected += len(missed)
                    misses.update(what for canvas in missed for what in canvas)
                    for molecule in molecules:
                        if molecule.smiles not in found and len(found) < n:
                            found[molecule.smiles] = molecule
                            if on_molecule is not None:
                                on_molecule(molecule)
                    bar.update(len(found) - bar.n)
                    bar.set_postfix(canvases=f"{tried}/{budget}")  # redrawn even in a round that found none
                    if interrupted is not None:
                        raise interrupted
                    if on_round is not None:
                        on_round(tried, len(found))
        except KeyboardInterrupt:
            raise DesignInterrupted(outcome(exhausted=False)) from None
        return outcome(exhausted=len(found) < n)

    def _round(self, request: MoleculeRequest, rows: int, free: bool, generator: torch.Generator,
               found: dict[str, Molecule], lean: task.Lean, after_pass: Callable[[int], None]
               ) -> tuple[list[Molecule], int, int, list[list[str]]]:
        """One round of `rows` canvases: its verified molecules not in `found`, how many verified ones were left
        out as MOSES training molecules and as atypical, and what each canvas that ended on a valid molecule
        missing the request missed (`MoleculeRequest.misses`)."""
        if free:
            prompt, layouts = task.training_draws(rows, generator)
        else:
            prompt = task.sample_prompts(request, rows, generator)
            layouts = (task.fragment_layouts(request.fragment, rows, generator,
                                             keep_bracket_hydrogens=request.scaffold is None)
                       if self.guided and request.fragment else None)
        guidance = task.MoleculeGuidance(request, generator, layouts, lean) if self.guided else None
        device = self.model.device
        # the clock keeps each canvas as it stops: on Ctrl-C (a round takes minutes on a CPU) those are kept
        clock = FinishClock(rows, lambda info: after_pass(info.step), on_instance=lambda *_: None)
        try:
            out = generate(self.model, prompt.to(device), self.config, guidance=guidance,
                           generator=child_generator(generator, device), callback=clock)
            canvas, passes, stop = out.canvas, out.forward_passes.tolist(), None
        except KeyboardInterrupt as interrupt:
            stopped = ~clock.stopped_at.isnan()
            if clock.canvas is None or not stopped.any():
                raise
            canvas, passes, stop = clock.canvas[stopped], clock.passes[stopped].tolist(), interrupt
        checked = [_verified(smiles, request, used) for smiles, used in zip(task.decode(canvas), passes)]
        molecules = [m for m, _ in checked if m is not None and m.smiles not in found]
        missed = [misses for _, misses in checked if misses]
        known = atypical = 0
        if self.known is not None:
            novel = [m for m, seen in zip(molecules, self.known.contains([m.smiles for m in molecules])) if not seen]
            known, molecules = len(molecules) - len(novel), novel
        if free and self.acceptance is not None:
            kept = self.acceptance.accept([m.mol for m in molecules], generator).tolist()
            atypical, molecules = kept.count(False), [m for m, k in zip(molecules, kept) if k]
        if stop is not None:
            raise _RoundInterrupted(molecules, known, atypical, missed, len(passes)) from stop
        return molecules, known, atypical, missed


class _RoundInterrupted(KeyboardInterrupt):
    """Ctrl-C inside a round: what its canvases that had stopped gave (`_round`'s results) and how many they were."""

    def __init__(self, *results):
        super().__init__()
        self.results = results


def _verified(smiles: str | None, request: MoleculeRequest, passes: int) -> tuple[Molecule | None, list[str]]:
    """The independent final check, on the canonical SMILES handed back (RDKit does not promise that every
    SMILES it writes reads back): RDKit parses and sanitizes it to itself, and the request holds for that Mol,
    the one returned. (the molecule or None, the conditions a valid molecule misses: [] for no valid one)."""
    mol = parse_molecule(smiles)
    canonical = None if mol is None else Chem.MolToSmiles(mol)
    returned = None if mol is None else parse_molecule(canonical)
    if returned is None or Chem.MolToSmiles(returned) != canonical:
        return None, []
    if missed := request.misses(returned):
        return None, missed
    return Molecule(canonical, returned, compute_properties(returned, list(PROPERTIES)), True, passes), []


def _acceptance_of(model: DiffusionGemma) -> Acceptance | None:
    """The acceptance.safetensors beside the model's weights; None when there is none, or when it was fitted to
    other weights (then free generation runs without it, with a warning)."""
    path = Path(model.source) / ACCEPTANCE_FILE if model.source else None
    if path is None or not path.is_file():
        return None
    fitted_to = Acceptance.fitted_to(path)
    if fitted_to is not None and fitted_to != weights_digest(model.source):
        arguments.warn_caller(f"{path} was fitted to other weights than {model.source} holds now; free generation "
                              "runs without the training-likeness acceptance (fit it again with fit_acceptance)",
                              UserWarning)
        return None
    return Acceptance.load(path)


@rdkit_quiet
def fit_acceptance(checkpoint: str | Path, molecules: int = 5000, training: int = 10000, seed: int = 0,
                   quantile: float = 0.8) -> Path:
    """Fit the training-likeness acceptance of `checkpoint` (a directory) and write its acceptance.safetensors:
    `molecules` verified molecules of its free generation (training prior and novelty filter on, acceptance off)
    against `training` MOSES training molecules drawn at random (needs the molsets wheel)."""
    import numpy as np

    from ..tasks.molecule_data import read_moses

    began = time.perf_counter()
    designer = MoleculeDesigner.from_pretrained(str(checkpoint), match_training=False)
    designed = [m.mol for m in designer.generate(molecules, seed=seed)]
    train = read_moses("train")
    reference = [Chem.MolFromSmiles(train[i])
                 for i in np.random.default_rng(seed).choice(len(train), training, replace=False)]
    acceptance = Acceptance.fit(designed, reference, quantile)
    kept = float(acceptance.keep_probability(designed).mean())
    path = Path(checkpoint) / ACCEPTANCE_FILE
    acceptance.save(path, {
        "weights": weights_digest(checkpoint),
        "command": f"python -c \"from diffsolve.solvers.molecules import fit_acceptance; fit_acceptance("
                   f"'{checkpoint}', molecules={molecules}, training={training}, seed={seed}, quantile={quantile})\"",
        "designer_molecules": str(len(designed)), "training_molecules": str(training), "seed": str(seed),
        "quantile": str(quantile), "expected_kept": f"{kept:.3f}", "seconds": f"{time.perf_counter() - began:.0f}"})
    return path
