"""Molecule requests: property windows, a SMARTS substructure, a scaffold, the largest ring and structural
alerts to avoid, parsed and checked (`MoleculeRequest.parse`) so that malformed or impossible requests are
refused before any work, and verified on RDKit's exact values."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from rdkit import Chem

from ..core import arguments
from .molecule_canvas import scaffold_ids
from .molecule_chemistry import (ALERT_CATALOGS, CARBAMIC_ACID, alert_catalog, decorates, rare_motif,
                                 spare_hydrogens)
from .molecule_data import (MAX_SMILES_TOKENS, PROPERTIES, SMILES_TOKENS, TRAINING_RANGES, SmilesError,
                            compute_properties, exact_properties, rdkit_quiet, tokenize_known)
from .text import plural


# Default largest ring: MOSES has no ring of 8+ atoms (its filters reject them), but backtracking can close one by
# pairing ring digits far apart. Measured on 1,000 guided canvases: 668 molecules of which 73 had such a ring
# (83.7 % pass MOSES's filters) without the limit; 601 with it (95.5 % pass), more passing molecules in all.
MAX_RING_SIZE = 7


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
        queries = ([_smiles_query(self.scaffold)] if self.scaffold else []) + \
            ([_smarts(self.contains)] if self.contains else [])
        return [Chem.Mol(query) for query in queries]  # copies: the cached ones judge every later request

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


LONG_TOKENS = 45  # 99 % of MOSES training SMILES have at most this many tokens (20,000 drawn at seed 0)
