"""MOSES metric definitions (tasks/molecule_metrics.py), checked against RDKit's own similarity code and
hand-made sets whose answers differ between MOSES's definitions and the tempting alternatives."""


import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from diffsolve.tasks import molecule_metrics as mm

SMILES = ["c1ccccc1CCO", "c1ccccc1CCN", "CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccc2ccccc2c1", "CCCCCC"]


def _rdkit_tanimoto() -> list[list[float]]:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    fps = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in SMILES]
    return [DataStructs.BulkTanimotoSimilarity(fp, fps) for fp in fps]


def test_tanimoto_matches_rdkit():
    fps = mm.fingerprints([Chem.MolFromSmiles(s) for s in SMILES])
    flat = [t for row in _rdkit_tanimoto() for t in row]
    assert mm.tanimoto(fps, fps).flatten().tolist() == pytest.approx(flat, abs=1e-6)


@pytest.mark.parametrize("p", [1, 2])
def test_internal_diversity_averages_each_molecules_p_mean(p):
    similarity = _rdkit_tanimoto()
    expected = 1 - sum((sum(t ** p for t in row) / len(row)) ** (1 / p) for row in similarity) / len(similarity)
    pooled = 1 - (sum(t ** p for row in similarity for t in row) / len(similarity) ** 2) ** (1 / p)
    fps = mm.fingerprints([Chem.MolFromSmiles(s) for s in SMILES])
    assert mm.internal_diversity(fps, p) == pytest.approx(expected, abs=1e-6)
    if p == 2:  # the definitions differ here, so the test tells them apart
        assert abs(expected - pooled) > 1e-4, (expected, pooled)


def test_snn_is_the_mean_nearest_neighbour_similarity():
    similarity = _rdkit_tanimoto()
    expected = sum(max(similarity[i][j] for j in range(2, len(SMILES))) for i in range(2)) / 2
    fps = mm.fingerprints([Chem.MolFromSmiles(s) for s in SMILES])
    assert mm.snn(fps[:2], fps[2:]) == pytest.approx(expected, abs=1e-6)


def test_fragments_are_counted_with_repeats():
    counts = mm.fragment_counts([Chem.MolFromSmiles("c1ccccc1C(=O)Nc1ccccc1C(=O)Nc1ccccc1")])
    assert sum(counts.values()) > len(counts)  # the same BRICS fragment twice in one molecule counts twice
    assert all("." not in fragment for fragment in counts)


def test_scaffolds_need_two_rings():
    mols = [Chem.MolFromSmiles(s) for s in ["c1ccccc1CCO", "CCCC", "O=C(O)c1ccc2ccccc2c1", "c1ccccc1Cc1ccncc1"]]
    assert mm.scaffold_counts(mols) == {"c1ccc2ccccc2c1": 1, "c1ccc(Cc2ccncc2)cc1": 1}
    assert mm.scaffold_counts(mols, min_rings=1)["c1ccccc1"] == 1


def test_validity_uniqueness_and_novelty():
    strings = ["CCO", "OCC", "C1CC", "", "c1ccccc1"]
    assert mm.validity(strings) == pytest.approx(3 / 5)
    valid = [c for c in map(mm.canonical, strings) if c]
    assert mm.unique_at(valid, 2) == pytest.approx(1 / 2)  # CCO and OCC are one molecule
    assert mm.novelty(valid, {"CCO"}) == pytest.approx(1 / 2)


def test_cosine_of_counts():
    assert mm.cosine({"a": 1, "b": 1}, {"a": 2, "b": 2}) == pytest.approx(1.0)
    assert mm.cosine({"a": 1}, {"b": 1}) == 0.0
    assert mm.cosine({"a": 3, "b": 4}, {"a": 1}) == pytest.approx(3 / 5)
    assert mm.cosine({}, {}) == 0.0
