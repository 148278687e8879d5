"""MOSES distribution metrics, written from their published definitions (Polykovskiy et al. 2020).

validity, unique@k, novelty, IntDiv1/2 (Morgan r=2, 1024 bits), filters (MCF + PAINS, MOSES atom and ring
rules), SNN (mean nearest-neighbour Tanimoto to the reference), Frag and Scaf (cosine similarity of BRICS
fragment and Bemis-Murcko scaffold counts), FCD (Frechet ChemNet Distance, via the `fcd_torch` package).
Every choice that changes a number follows the MOSES code (molsets 0.3.1, `moses/metrics/`): the metrics after
validity take every valid molecule, repeats included; IntDiv_p averages each molecule's p-mean; Frag counts
every fragment `FragmentOnBRICSBonds` cuts (repeats in a molecule included); Scaf counts scaffolds of two or
more rings.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from .molecule_data import moses_file

FILTER_ATOMS = {"C", "N", "S", "O", "F", "Cl", "Br", "H"}


def canonical(smiles: str) -> str | None:
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return Chem.MolToSmiles(mol) if mol is not None else None


def validity(smiles: Sequence[str]) -> float:
    return sum(canonical(s) is not None for s in smiles) / max(1, len(smiles))


def unique_at(valid_canonical: Sequence[str], k: int) -> float:
    head = list(valid_canonical[:k])
    return len(set(head)) / max(1, len(head))


def novelty(valid_canonical: Iterable[str], train: set[str]) -> float:
    unique = set(valid_canonical)
    return sum(s not in train for s in unique) / max(1, len(unique))


# ------------------------------------------------------------------------------------------ fingerprints
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)


def fingerprints(mols: Sequence[Chem.Mol]) -> torch.Tensor:
    """[N, 1024] float 0/1 Morgan fingerprints (so Tanimoto is a matrix product)."""
    out = np.zeros((len(mols), 1024), dtype=np.float32)
    for i, mol in enumerate(mols):
        DataStructs.ConvertToNumpyArray(_MORGAN.GetFingerprint(mol), out[i])
    return torch.from_numpy(out)


def tanimoto(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = a @ b.T
    return inter / (a.sum(1, keepdim=True) + b.sum(1)[None] - inter).clamp(min=1)


def internal_diversity(fps: torch.Tensor, p: int = 1, chunk: int = 2048) -> float:
    """1 - mean over molecules i of (mean over j, i included, of Tanimoto(i, j)^p)^(1/p), as MOSES computes it
    (for p = 2 this is not the root of the mean over all pairs)."""
    per_molecule = torch.cat([tanimoto(fps[start:start + chunk], fps).pow(p).mean(1)
                              for start in range(0, len(fps), chunk)])
    return 1 - per_molecule.pow(1 / p).mean().item()


def snn(gen_fps: torch.Tensor, ref_fps: torch.Tensor, chunk: int = 1024) -> float:
    """Mean over generated molecules of the Tanimoto similarity to their nearest reference neighbour."""
    best = torch.zeros(len(gen_fps))
    for start in range(0, len(ref_fps), chunk * 8):
        ref = ref_fps[start:start + chunk * 8]
        for g in range(0, len(gen_fps), chunk):
            best[g:g + chunk] = torch.maximum(best[g:g + chunk], tanimoto(gen_fps[g:g + chunk], ref).amax(1))
    return best.mean().item()


# ------------------------------------------------------------------------------------------ counts
def fragment_counts(mols: Iterable[Chem.Mol]) -> Counter:
    """Every fragment of every molecule cut at its BRICS bonds (dummy atoms marking the cuts), repeats counted."""
    counts: Counter = Counter()
    for mol in mols:
        counts.update(Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(mol)).split("."))
    return counts


def scaffold_counts(mols: Iterable[Chem.Mol], min_rings: int = 2) -> Counter:
    """Bemis-Murcko scaffolds with at least `min_rings` rings (MOSES leaves out benzene and other one-ring
    scaffolds, which would dominate the counts)."""
    counts: Counter = Counter()
    for mol in mols:
        try:
            scaffold = MurckoScaffold.GetScaffoldForMol(mol)
        except (ValueError, RuntimeError):  # as MOSES: a molecule RDKit cannot cut counts no scaffold
            continue
        if scaffold.GetRingInfo().NumRings() >= min_rings:
            counts[Chem.MolToSmiles(scaffold)] += 1
    return counts


def cosine(a: Counter, b: Counter) -> float:
    keys = set(a) | set(b)
    va = np.array([a.get(k, 0) for k in keys], dtype=np.float64)
    vb = np.array([b.get(k, 0) for k in keys], dtype=np.float64)
    denom = np.linalg.norm(va) * np.linalg.norm(vb)
    return float(va @ vb / denom) if denom else 0.0


# ------------------------------------------------------------------------------------------ filters
def filter_patterns() -> list[Chem.Mol]:
    """MOSES's structural alerts (MCF and PAINS SMARTS), read from the molsets wheel."""
    patterns = []
    metrics = moses_file("train").parents[2] / "metrics"
    for name in ("mcf.csv", "wehi_pains.csv"):
        with open(metrics / name) as f:
            rows = list(csv.reader(f))
        column = 1 if name == "mcf.csv" else 0
        body = rows[1:] if name == "mcf.csv" else rows
        patterns += [Chem.MolFromSmarts(row[column].strip()) for row in body if row]
    return [p for p in patterns if p is not None]


def passes_filters(mol: Chem.Mol, patterns: Sequence[Chem.Mol]) -> bool:
    """MOSES's filter: no ring of 8+ atoms, no charges, only C N S O F Cl Br H, no MCF/PAINS alert."""
    if any(len(ring) >= 8 for ring in mol.GetRingInfo().AtomRings()):
        return False
    if any(a.GetFormalCharge() != 0 or a.GetSymbol() not in FILTER_ATOMS for a in mol.GetAtoms()):
        return False
    with_h = Chem.AddHs(mol)
    return not any(with_h.HasSubstructMatch(p) for p in patterns)


# ------------------------------------------------------------------------------------------ FCD
def chemnet_activations(smiles: Sequence[str], chunk: int = 10_000) -> np.ndarray:
    """[len(smiles), 512] ChemNet activations, `chunk` molecules at a time (fcd_torch holds its whole input's
    encoding at once: 176k molecules took 23 GB). fcd_torch reads its bundled weights with torch.load, which in
    torch >= 2.6 is the restricted weights-only loader (no arbitrary pickle code)."""
    from fcd_torch import FCD

    chemnet, smiles = FCD(device="cpu", n_jobs=1, batch_size=512), list(smiles)
    parts = [chemnet.get_predictions(smiles[start:start + chunk]) for start in range(0, len(smiles), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 512))


def activation_stats(activations: np.ndarray) -> dict[str, np.ndarray]:
    return {"mu": activations.mean(0), "sigma": np.cov(activations.T)}


def chemnet_stats(smiles: Sequence[str]) -> dict[str, np.ndarray]:
    """Mean and covariance of ChemNet activations."""
    return activation_stats(chemnet_activations(smiles))


def frechet_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    from fcd_torch.utils import calculate_frechet_distance

    return float(calculate_frechet_distance(a["mu"], a["sigma"], b["mu"], b["sigma"]))
