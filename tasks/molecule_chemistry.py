"""What a returned molecule may be: RDKit's reading of a SMILES checked against chemistry no training molecule
has (`implausible`), structural-alert catalogs, and what it means to decorate a scaffold."""

from __future__ import annotations

from functools import lru_cache

from rdkit import Chem
from rdkit.Chem import FilterCatalog

from .molecule_data import exact_properties


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


# RDKit's FilterCatalog catalogs by name: PAINS (and its families A-C), BRENK, NIH, ZINC, the ChEMBL sets, ALL.
ALERT_CATALOGS = tuple(FilterCatalog.FilterCatalogParams.FilterCatalogs.names)


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


def decorates(mol: Chem.Mol, scaffold: Chem.Mol) -> bool:
    """Whether `mol` is `scaffold` with at least one atom more, each added where a scaffold atom had a hydrogen
    to replace: N-methyl-2-pyridone holds pyridine's ring, but its methyl sits on the nitrogen, which has no
    hydrogen in pyridine, so it is another chemotype (a lactam), not a decorated pyridine."""
    if mol.GetNumHeavyAtoms() <= scaffold.GetNumAtoms():
        return False
    return any(all(mol.GetAtomWithIdx(j).GetDegree() <= atom.GetDegree() + atom.GetTotalNumHs()
                   for atom, j in zip(scaffold.GetAtoms(), match))
               for match in mol.GetSubstructMatches(scaffold, uniquify=False, maxMatches=10_000))


def spare_hydrogens(mol: Chem.Mol, keep_bracket_hydrogens: bool) -> list[int]:
    """Per atom, the hydrogens a decoration may replace: all of them, or with `keep_bracket_hydrogens` none on an
    atom written in brackets (a `contains` pattern's '[OH]' or '[nH]' asks for exactly that hydrogen)."""
    return [0 if keep_bracket_hydrogens and (atom.GetNoImplicit() or atom.GetNumExplicitHs())  # [nH]: explicit H
            else atom.GetTotalNumHs() for atom in mol.GetAtoms()]
