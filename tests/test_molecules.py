"""Molecules: tokens, requests, per-pass chemistry checks, `MoleculeDesigner` and `solve molecules`."""

import copy
import io
import json
import math
import re
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors
from typer.testing import CliRunner

from diffsolve.core import CheckpointError
from diffsolve.solvers import DesignInterrupted, MoleculeDesigner
from diffsolve.solvers.checkpoints import default_checkpoint
from diffsolve.solvers.cli import app
from diffsolve.tasks import molecules as task
from diffsolve.tasks.molecule_canvas import bin_token, encode_tokens
from diffsolve.tasks.molecule_chemistry import (alert_atoms, alert_catalog, decorates, implausible, parse_molecule,
                                               spare_hydrogens)
from diffsolve.tasks.molecule_data import (PROPERTIES, SmilesError, bin_index, featurize, prompt_sample,
                                          scaffold_smiles, split_smiles, tokenize_known)
from diffsolve.tasks.molecule_request import (MoleculeRequest, RequestError, UnlikelyRequestWarning, parse_window,
                                              pattern_floors, unmatchable)
from diffsolve.tasks.text import plural
from interrupt import ctrl_c_when

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


@pytest.fixture(scope="module")
def designer():
    return MoleculeDesigner.from_pretrained(canvases_per_round=64)


def test_contains_given_as_a_molecule_is_read_as_its_smiles():
    """A Mol from SMILES is the text it spells (written on the canvas as a fragment), not atomic-number SMARTS
    that only the verifier can use; a SMARTS query stays a query."""
    text = "O=C(NC1CC1)c1ccncc1"
    as_text, as_mol = (MoleculeRequest.parse(contains=c) for c in (text, Chem.MolFromSmiles(text)))
    assert as_mol.fragment is not None and as_mol.fragment == as_text.fragment
    mapped = MoleculeRequest.parse(contains=Chem.MolFromSmiles("[CH3:1][C:2](=[O:3])[NH2:4]"))
    assert mapped.contains == "CC(N)=O" == mapped.fragment  # atom maps dropped: the molecule, not a reaction map
    query = MoleculeRequest.parse(contains=Chem.MolFromSmarts("[#6]C(=O)N"))
    assert query.contains == "[#6]C(=O)N"


def test_a_drawn_seed_leaves_the_global_torch_generator_alone(designer):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    result = designer.generate(1, budget=1)
    assert torch.equal(state, torch.get_rng_state()) and result.seed is not None


# ------------------------------------------------------------------------------------------ tokens and data
def test_tokens_round_trip_and_unknown_tokens_are_named():
    assert "".join(split_smiles(ASPIRIN)) == ASPIRIN
    assert split_smiles("ClCC[nH]Br") == ["Cl", "C", "C", "[nH]", "Br"]
    with pytest.raises(SmilesError, match=r"\[N\+\]"):
        tokenize_known("C[N+](C)(C)C")
    with pytest.raises(SmilesError, match="cannot tokenize"):
        split_smiles("C&C")


def test_prompt_sample_holds_bins_lengths_and_scaffolds_of_the_drawn_molecules():
    smiles = ["CCO", "c1ccccc1CC(=O)O", "O=C(Nc1ccccc1)C1CC1", "Cc1ccc(S(N)(=O)=O)cc1", "[Xe]", "CC[Se]C",
              "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "OC1CCCCC1"]
    rows = prompt_sample(smiles, 5, seed=1, workers=1)
    assert rows == prompt_sample(smiles, 5, seed=1, workers=1) and len(rows) == 5
    assert rows != prompt_sample(smiles, 5, seed=2, workers=1)
    by_scaffold = {}
    for logp_bin, mw_bin, tpsa_bin, tokens, scaffold in rows:
        matches = [s for s in smiles if s not in ("[Xe]", "CC[Se]C") and len(split_smiles(s)) == tokens
                   and scaffold_smiles(Chem.MolFromSmiles(s)) == scaffold]
        assert len(matches) == 1, (tokens, scaffold)
        mol = Chem.MolFromSmiles(matches[0])
        assert logp_bin == bin_index("logp", Crippen.MolLogP(mol)) and mw_bin == bin_index("mw", Descriptors.MolWt(mol))
        assert tpsa_bin == bin_index("tpsa", rdMolDescriptors.CalcTPSA(mol))
        by_scaffold[matches[0]] = scaffold
    assert len(by_scaffold) == 5 and by_scaffold.get("CCO", "") == ""


def test_training_batches_hold_the_molecule_then_eos_and_optional_conditions():
    smiles = [ASPIRIN, "CCO", "c1ccc2ccccc2c1CCN"]
    data = featurize(smiles, workers=1)
    stream = task.MoleculeStream(data, keep=1.0)
    batch = stream.batch(torch.Generator().manual_seed(0), 8)
    decoded = task.decode(batch.target)
    assert set(decoded) <= set(smiles)
    assert ((batch.target == task.EOS).sum(1) == 1).all()
    assert (batch.prompt[:, 0] == task.BOS).all()
    for prompt, text in zip(batch.prompt.tolist(), decoded):
        mol = Chem.MolFromSmiles(text)
        assert prompt[1] == bin_token("logp", PROPERTIES["logp"].compute(mol))
        has_ring = mol.GetRingInfo().NumRings() > 0
        assert (task.SCAFFOLD in prompt) == has_ring  # keep=1: every scaffold shown


def test_a_prepared_training_set_holds_smiles_token_ids_only(tmp_path):
    import numpy as np

    data = featurize([ASPIRIN, "CCO"], workers=1)
    good = tmp_path / "good.npz"
    np.savez(good, **data)
    assert task.training_set(good, examples=2, seed=0, check=False)["molecules"].shape == (2, 62)
    np.savez(tmp_path / "floats.npz", **{**data, "molecules": data["molecules"] + 0.7})  # ids would be truncated
    with pytest.raises(ValueError, match="'molecules' holds float64 values, not token ids"):
        task.training_set(tmp_path / "floats.npz", examples=2, seed=0, check=False)
    for name, value in (("molecules", task.EOS), ("scaffolds", 200)):  # EOS belongs after, not in, a molecule
        broken = dict(data)
        broken[name] = data[name].copy()
        broken[name][0, 3] = value
        np.savez(tmp_path / "bad.npz", **broken)
        with pytest.raises(ValueError, match=f"'{name}' holds ids that are neither SMILES tokens nor padding"):
            task.training_set(tmp_path / "bad.npz", examples=2, seed=0, check=False)


# ------------------------------------------------------------------------------------------ requests
@pytest.mark.parametrize("kwargs, message", [
    (dict(windows={"logp": (3, 1)}), "lower bound 3 is above upper bound 1"),
    (dict(windows={"qed": (2, 3)}), "outside what any molecule"),
    (dict(windows={"hbd": (0.2, 0.8)}), "no whole number"),
    (dict(windows={"mw": (float("nan"), 3)}), "must be numbers"),
    (dict(windows={"weight": (1, 2)}), "unknown property"),
    (dict(contains="C(("), "not a valid SMARTS"),
    (dict(scaffold="not_a_smiles"), "not a valid SMILES"),
    (dict(scaffold="not a smiles"), "scaffold: 'not a smiles' has a space; RDKit would read only 'not'"),
    (dict(scaffold="c1ccccc1", windows={"heavy_atoms": (1, 6)}), "decorated has at least heavy_atoms = 7"),
    (dict(scaffold="N#CC#N"), "no atom has a hydrogen to replace"),
    (dict(scaffold="[*:1]c1ccccc1"), "marks attachment points \\(\\*\\), which diffsolve does not take: it "
                                     "decorates the scaffold wherever it has a hydrogen to replace; give it without "
                                     "them \\('c1ccccc1'\\)"),
    (dict(scaffold="c1ccccc1.C1CCNCC1"), "2 disconnected pieces; .* pass 'c1ccccc1.C1CCNCC1' as contains"),
    (dict(scaffold="[H]"), "cannot be decorated: atom 1 is H; the model writes C, N, O"),
    (dict(scaffold="C[C@H](N)C=O"), "atom 2 has stereo"),
    (dict(contains="[N+](=O)[O-]"), "can never match: atom 1 has charge \\+1"),
    (dict(contains="[P,I]"), "atom 1 is P"),
    (dict(contains="N(=O)=O"), "can never match: its N \\(atom 1\\) has more bonds than RDKit allows it \\(a nitro "
                               "group's N is charged"),  # was the whole budget, then exit 1
    (dict(contains="C(C)(C)(C)(C)C"), "its C \\(atom 1\\) has more bonds"),
    (dict(contains="C1CCCCCCC1"), "substructure C1CCCCCCC1 has a ring of 8 atoms, larger than max_ring_size=7"),
    (dict(contains="[2H]"), "atom 1 is H"),
    (dict(contains="[se]"), "atom 1 is Se \\(aromatic\\)"),
    (dict(contains="C/C=C/C"), "bond 1 has cis/trans stereo"),
    (dict(scaffold="c1ccc2ccccc2c1", windows={"mw": (10, 100)}), "window :100 .* decorated has at least mw = 132"),
    (dict(scaffold="c1ccccc1", windows={"mw": (78.2, 80)}), "decorated has at least mw = 84.077"),
    (dict(contains="C1=CC=CC=C1"), "not even the molecule it spells, which RDKit reads as 'c1ccccc1'"),
    (dict(windows={"heavy_atoms": (1, 2), "rings": (1, None)}), "rings: window 1: .* a ring needs at least 3 atoms"),
    (dict(windows={"heavy_atoms": (1, 3), "rings": (2, None)}), "rings: window 2: .* 3 atoms hold at most 1 ring$"),
    (dict(windows={"heavy_atoms": (1, 3), "mw": (300, None)}), "such molecules weigh 12.011 to 239.712"),
    (dict(windows={"heavy_atoms": (30, 40), "mw": (None, 300)}), "such molecules weigh 360.33 to"),
    (dict(contains="C(=O)N.[F,Cl]", windows={"heavy_atoms": (1, 3)}), "substructure C\\(=O\\)N.\\[F,Cl\\] alone"),
    (dict(contains="c1ccccc1", windows={"rings": (0, 0)}), "containing the substructure c1ccccc1 has rings >= 1"),
    (dict(contains="c", windows={"rings": (0, 0)}), "containing the substructure c has rings >= 1: .*an aromatic atom"),
    (dict(contains="[C,N]1CC1", windows={"rings": (0, 0)}), "substructure \\[C,N\\]1CC1 has rings >= 1"),
    (dict(contains="[#6]1~*~*~*~*~*~1~*1~*~*~1", windows={"rings": (0, 1)}), "has rings >= 2"),
    (dict(windows={"heavy_atoms": (1, 2), "hbd": (3, None)}), "hbd: window 3: is impossible with heavy_atoms :2: "
                                                              "each of the hydrogen-bond donors is one of the heavy"),
    (dict(windows={"heavy_atoms": (1, 2), "hba": (3, None)}), "each of the hydrogen-bond acceptors"),
    (dict(contains="c1ccc2ccccc2c1", windows={"mw": (10, 100)}), "substructure c1ccc2ccccc2c1 alone has mw"),
    (dict(avoid="PAINS,toxic"), "avoid: unknown catalog 'toxic'; the structural-alert catalogs are PAINS_A, "),
    (dict(avoid=" , "), "avoid: empty; the structural-alert catalogs are"),
    (dict(avoid=["PAINS", 3]), "avoid: expected catalog names"),
    # RDKit reads the text after a space as the molecule's name: the amide would never be checked
    (dict(contains="c1ccccc1 C(=O)N"), "contains: 'c1ccccc1 C\\(=O\\)N' has a space; RDKit would read only "
                                       "'c1ccccc1' \\(to require several parts, join them with '.'\\)"),
    (dict(scaffold="c1ccccc1\tC1CCNCC1"), "scaffold: .* has a space; RDKit would read only 'c1ccccc1'$"),
    (dict(windows={"hbd": (False, True)}), "hbd: expected a \\(lo, hi\\) pair of numbers"),
    (dict(windows={"logp": ("1", "3")}), "logp: expected a \\(lo, hi\\) pair of numbers"),
    (dict(windows={"logp": (1, 2, 3)}), "logp: expected a \\(lo, hi\\) pair of numbers"),
    (dict(windows={"mw": (0, 10**400)}), "mw: expected a \\(lo, hi\\) pair of numbers .*\\.\\.\\."),
    (dict(windows=[("logp", (1, 2))]), "windows: expected a dict of property name: \\(lo, hi\\), got list"),
])
def test_bad_requests_are_rejected_before_any_work(kwargs, message):
    with pytest.raises(RequestError, match=message):
        MoleculeRequest.parse(**kwargs)


def _number(text: str) -> bool:
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


BOUND = st.one_of(st.just(""), st.just(" "), st.integers(-999, 999).map(str),
                  st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr), st.text(max_size=4))


@given(st.one_of(st.text(max_size=12), st.tuples(BOUND, BOUND).map(":".join)))
@example(":NAN")  # float() reads it; a window bound it is not
def test_window_parser_returns_the_bounds_written_or_a_request_error(text):
    parts = text.split(":")
    readable = len(parts) == 2 and any(p.strip() for p in parts) and all(_number(p) for p in parts if p.strip())
    try:
        window = parse_window(text, "logp")
    except RequestError:
        assert not readable
        return
    assert readable and window == tuple(float(p) if p.strip() else None for p in parts)


def test_windows_are_checked_on_exact_values_not_the_rounded_display():
    mol = Chem.MolFromSmiles(ASPIRIN)
    qed = PROPERTIES["qed"].compute(mol)  # 0.55012...
    edge = math.floor(qed * 1e4) / 1e4  # 0.5501: the displayed value, just below the exact one
    ok, shown = MoleculeRequest.parse({"qed": (0, edge)}).verify(mol)
    assert not ok and shown["qed"] == round(qed, 4)
    assert MoleculeRequest.parse({"qed": (0, qed)}).verify(mol)[0]
    assert MoleculeRequest.parse({"qed": (qed, 1)}).verify(mol)[0]  # both ends of a window are inside it
    assert not MoleculeRequest.parse({"qed": (math.nextafter(qed, 1), 1)}).verify(mol)[0]
    with pytest.raises(RequestError, match="outside what any molecule"):
        MoleculeRequest.parse({"mw": (0, 5)})  # lighter than methane


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 2, "logp": "23"}, "expected a \\(lo, hi\\) pair of numbers, got the text '23'"),
    ({"n": 2.5}, "number of molecules must be a whole number"),
    ({"n": 2, "budget": 0}, "budget must be at least 1"),
    ({"n": 2, "seed": "a"}, "seed must be a whole number"),
    ({"n": 2, "scaffold": 3}, "scaffold: expected text or an RDKit Mol"),
])
def test_designer_arguments_are_checked_before_any_work(designer, kwargs, message):
    with pytest.raises(RequestError, match=message):
        designer.generate(**kwargs)


def test_rdkit_molecules_are_taken_as_scaffold_and_substructure(designer):
    ring = Chem.MolFromSmiles("c1ccncc1")
    result = designer.generate(2, scaffold=ring, contains=Chem.MolFromSmarts("[CX4]"), seed=0)
    assert len(result) == 2
    assert all(m.mol.HasSubstructMatch(ring) and m.mol.HasSubstructMatch(Chem.MolFromSmarts("[CX4]")) for m in result)
    # a molecule with explicit hydrogens is its heavy-atom pattern (the hydrogens are not atoms to match)
    phenol = MoleculeRequest.parse(contains=Chem.AddHs(Chem.MolFromSmiles("c1ccccc1O")))
    assert phenol.verify(Chem.MolFromSmiles("Cc1ccc(O)cc1"))[0] and not phenol.verify(Chem.MolFromSmiles("c1ccccc1"))[0]
    with pytest.raises(RequestError, match="request: expected a MoleculeRequest .* got dict"):
        designer.design(1, {"logp": (1, 2)})


def test_a_pattern_only_itself_can_contain_is_that_one_molecule(designer):
    """'FF' or CF4 match no molecule but themselves: more than one, or one their own properties rule out, is
    refused before any work (it was the whole budget); one comes back."""
    assert MoleculeRequest.parse(contains="FC(F)(F)F").sole_molecule is not None
    assert MoleculeRequest.parse(contains="FC(F)F").sole_molecule is None  # CHF3's hydrogen can go
    assert MoleculeRequest.parse(contains="O=S=O").sole_molecule is None  # S can take more bonds
    with pytest.raises(RequestError, match="matches only the molecule FF itself, which misses the request "
                                                "\\(mw below 100\\)"):
        MoleculeRequest.parse({"mw": (100, None)}, contains="FF")
    with pytest.raises(RequestError, match="matches only the molecule FF itself: ask for 1 molecule, not 2"):
        designer.generate(2, contains="FF", budget=1)
    cli = CliRunner().invoke(app, ["molecules", "-n", "3", "--contains", "FC(F)(F)F"])
    assert cli.exit_code == 2 and "--contains: 'FC(F)(F)F' matches only the molecule FC(F)(F)F itself" in cli.stderr
    assert [m.smiles for m in designer.generate(1, contains="FF", seed=0, budget=32)] == ["FF"]


def test_atom_maps_on_a_scaffold_only_name_its_atoms():
    for mapped, scaffold in [("[c:1]1ccccc1", "c1ccccc1"), ("[CH3:2]c1ccccc1", "Cc1ccccc1"),
                             ("[nH:1]1cccc1", "c1cc[nH]c1"), ("[CH3:1][C@H](O)[CH3:2]", "CC(C)O")]:
        assert MoleculeRequest.parse(scaffold=mapped).scaffold == scaffold


def test_queries_a_molecule_here_can_match_are_accepted():
    for pattern in ["[N,P]", "c", "[$(C=O)]", "[!#6]", "[OX2H]", "[Cl,I]", "C(=O)N.[F,Cl]", "[CH3]"]:
        assert MoleculeRequest.parse(contains=pattern).contains == pattern


def test_the_verifier_rejects_invented_hydrogens_and_undecorated_scaffolds():
    assert parse_molecule("CS(C)(C)=O") is None  # five bonds on S: RDKit would add an H to reach valence 6
    assert parse_molecule("C[SH](C)C") is None
    assert parse_molecule("[H]") is None and parse_molecule("[H][H]") is None
    assert parse_molecule("CS(C)(=O)=O") is not None and parse_molecule("c1cc[nH]c1") is not None
    # aromatic rings of four atoms with heteroatoms, as the model wrote them (RDKit sanitizes both)
    for smiles in ("O=C(Nc1ccc(-n2ccnn2)cc1)c1nn(-c2ccc(F)cc2)o1", "COC(=O)c1cccc(-n2nnn2-c2ccccc2Cl)c1"):
        assert Chem.MolFromSmiles(smiles) is not None and parse_molecule(smiles) is None
        assert implausible(Chem.MolFromSmiles(smiles)).startswith("an aromatic ring of 4 atoms with")
    assert parse_molecule("CCOc1c(Nc2cccc(Cl)c2C)c(=O)c1=O") is not None  # a squaramide: four carbons
    assert parse_molecule("c1ccc2c(c1)-n1cccc1-2") is not None  # a four-ring of aromatic atoms, single bonds
    # more bonds than a neutral atom takes, which RDKit reads as a charged group: the model writes neutral atoms
    for smiles, charged in [("Cc1ccc(N(=O)=O)cc1", "N with charge \\+1"), ("O=n1ccccc1", "N with charge \\+1"),
                            ("O=N(=O)c1ccccc1", "N with charge \\+1"), ("OCl(=O)(=O)=O", "Cl with charge \\+3")]:
        assert parse_molecule(smiles) is None
        assert re.match(charged, implausible(Chem.MolFromSmiles(smiles)))
    # triple bonds other than C#C and C#N: none in the training set; the scaffold benchmark returned C#S
    assert implausible(Chem.MolFromSmiles("CC#Sc1ccccc1S(=O)(=O)NCCc1cncs1")) == (
        "a triple bond between C and S (atoms 2 and 3)")
    assert parse_molecule("N#N") is None and parse_molecule("CC#O") is None
    assert parse_molecule("CC#N") is not None and parse_molecule("CC#CC") is not None
    # a carbamic acid loses CO2 (a chemist's probe: 8 of 19 molecules asked to hold C(=O)[OH] had one)
    assert implausible(Chem.MolFromSmiles("CCCCc1sccc1NC(=O)O")) == "a carbamic acid N-C(=O)OH, which loses CO2"
    assert parse_molecule("COCCCSc1cc2ccccc2n1C(=O)O") is None
    assert parse_molecule("CCCC(=O)O") is not None and parse_molecule("CCOC(=O)NC") is not None  # a carbamate
    assert MoleculeRequest.parse(contains="NC(=O)O").contains == "NC(=O)O"  # carbamates match it
    # a pentalene (antiaromatic; none in MOSES), returned once by a chemist's probe
    assert implausible(Chem.MolFromSmiles("Cc1csc(C2=CC=C3C=CC=C32)c1")).startswith("a pentalene")
    assert parse_molecule("C1=CC2CC=CC2=C1") is not None  # one ring carbon sp3: no pentalene
    # a request that needs such a ring or bond is refused before any work
    for request, message in [({"scaffold": "Cc1nn(C)o1"}, "scaffold: 'Cc1nn\\(C\\)o1' cannot be decorated: an "
                              "aromatic ring of 4 atoms with C, N, N, O"),
                             ({"contains": "c1nn(C)o1"}, "can never match: it has an aromatic ring of 4 atoms"),
                             ({"scaffold": "CC#Sc1ccccc1"}, "cannot be decorated: a triple bond between C and S"),
                             ({"contains": "C#S"}, "can never match: it has a triple bond between C and S"),
                             ({"contains": "NC(=O)[OH]"}, "only a carbamic acid N-C\\(=O\\)OH matches it")]:
        with pytest.raises(RequestError, match=message):
            MoleculeRequest.parse(**request)
    assert MoleculeRequest.parse(contains="O=c1c(=O)cc1").contains == "O=c1c(=O)cc1"
    # between two aromatic rings, a four-ring of aromatic atoms has single bonds: returned, and 'c1cnc1' matches it
    fused = parse_molecule("c1ccc2c(c1)-n1cccc1-2")
    assert fused.HasSubstructMatch(Chem.MolFromSmarts("c1cnc1"))
    assert MoleculeRequest.parse(contains="c1cnc1").contains == "c1cnc1"
    with pytest.raises(RequestError, match="not even the molecule it spells"):  # a small ring, not aromatic
        MoleculeRequest.parse(contains="C1CC1C1=CC=CC=C1")
    request = MoleculeRequest.parse(scaffold="c1cc[nH]c1")
    assert not request.verify(Chem.MolFromSmiles("c1cc[nH]c1"))[0]  # the bare scaffold is not a decoration
    assert request.verify(Chem.MolFromSmiles("Cn1cccc1"))[0]  # N-substituted: the scaffold is still there


def test_a_decoration_on_a_pyrrole_type_nitrogen_is_written_on_an_n():
    g = torch.Generator().manual_seed(0)
    fragment = "c1ccc2[nH]ccc2c1"
    mol = Chem.MolFromSmiles(fragment)
    layouts = [task._layout(mol, fragment, spare_hydrogens(mol, False), lambda high, low=0: int(
        torch.randint(low, high + 1, (1,), generator=g))) for _ in range(200)]
    filled = [Chem.MolFromSmiles("".join("C" if t is None else t for t in layout)) for layout in layouts]
    assert all(mol is not None for mol in filled)  # was a quarter '[nH](C)': nitrogen of valence 4
    assert any(mol.HasSubstructMatch(Chem.MolFromSmarts("[nX3;H0]")) for mol in filled)


def test_substructure_with_ring_and_weight_windows_is_accepted():
    request = MoleculeRequest.parse({"rings": (0, 1), "mw": (100, 200)}, contains="c1ccncc1")
    assert request.windows == {"rings": (0, 1), "mw": (100, 200)}


@pytest.mark.parametrize("windows, contains, scaffold, refused", [
    ({"hbd": (0, 0)}, "[OH]", None, "hbd: window :0 is impossible: every molecule containing the substructure "
                                    "\\[OH\\] has hbd >= 1"),
    ({"hbd": (0, 1)}, "[NH2].[OH]", None, "hbd >= 2"),
    ({"hba": (0, 1)}, "C(=O)OC", None, "hba >= 2"),  # an ester's two O atoms
    ({"hba": (0, 1)}, "CS(C)(=O)=O", None, "hba >= 2"),  # a sulfone: its O atoms, not its S
    ({"hba": (0, 0)}, None, "C1CCOC1", "containing the scaffold C1CCOC1 has hba >= 1"),
    ({"hbd": (0, 0)}, "O", None, None),  # an ether's O
    ({"hbd": (0, 0)}, "[O;!H0]", None, None),  # water's O has two hydrogens: no donor in RDKit's count
    ({"hba": (0, 0)}, "F", None, None),  # F is no acceptor in RDKit's count
    ({"hbd": (0, 0), "tpsa": (0, 10)}, "[N;!D1]", None, None),  # triethylamine: not every N with two neighbours
    ({"hba": (0, 0)}, "C(=O)[OH]", None, "hba >= 1"),  # the C=O; the acid's OH is not an acceptor
    ({"hbd": (0, 0)}, None, "c1ccncc1", None),  # decorated, its n may carry H (a pyridone)
    ({"hba": (0, 0)}, "[nH0]", None, None),  # N-methylpyrrole's n is no acceptor (RDKit's HBA 2.0.2)
    ({"hba": (0, 0)}, "c1ccoc1", None, "hba >= 1"),  # a furan's o is
    ({"tpsa": (0, 10)}, "C(=O)N", None, "tpsa >= 12.24: the polar surface its N and O atoms add"),
    ({"tpsa": (0, 30)}, "C(=O)[OH]", None, None),  # 37.3 in formic acid, but only 29.46 is sure from the pattern
    ({"tpsa": (0, 3.01)}, "[#7]", None, None),  # a tertiary amine in a three-membered ring adds 3.01
    ({"tpsa": (0, 3)}, "[#7]", None, "tpsa >= 3.01"),
    ({"tpsa": (0, 3)}, "[#7;H1]", None, "tpsa >= 12.03"),
])
def test_donor_acceptor_and_polar_surface_windows_below_the_patterns_are_refused(windows, contains, scaffold, refused):
    if refused is None:
        assert MoleculeRequest.parse(windows, contains=contains, scaffold=scaffold).windows == windows
    else:
        with pytest.raises(RequestError, match=refused):
            MoleculeRequest.parse(windows, contains=contains, scaffold=scaffold)


# Drug-like molecules with the groups whose donors and acceptors depend on their neighbours (acids, amides,
# sulfonamides, pyridones, oxazoles, thiols, CF3): what `pattern_floors` must never overstate.
DONOR_ACCEPTOR_MOLECULES = [
    "CC(=O)Nc1ccc(O)cc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1CCCC1c1cccnc1", "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "O=C(C(C(F)(F)F)C(F)(F)F)N1CCCCC1", "O=S(=O)(NCc1ccccc1Cl)c1ccccc1", "Nc1ccc(S(N)(=O)=O)cc1", "O=c1cc[nH]cc1",
    "Cc1ccc(C=O)o1", "Cc1nc2ccccc2o1", "Cc1ncc(C)s1", "CCSc1ccccc1", "OCCS", "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "COc1ccc2[nH]cc(CCN)c2c1", "CC(C)NCC(O)COc1cccc2ccccc12", "CN1CCCC1=O", "N#Cc1ccccc1", "CC(=O)N(C)C",
    "O=C(O)CCc1c[nH]c2ccccc12", "O=C(Nc1ccc(Br)cc1)c1ccco1", "c1ccc2c(c1)OCO2", "CC(C)(C)OC(=O)N1CCC(O)CC1",
    "O=C(Nc1nccs1)c1ccccc1", "Cc1cc(=O)oc2ccccc12", "CN(C)S(=O)(=O)c1ccccc1", "NC(=N)c1ccccc1", "O=C(NO)c1ccccc1",
    "C=CC(=O)OC", "CC(=O)SC", "CS(C)=O", "O=c1cccc[nH]1", "Cn1ccnc1", "c1ccc2[nH]ncc2c1", "OC(=O)C(F)(F)F", "CO",
    "O", "N", "NCCN", "OC1CCNCC1", "CN1CC1", "CC1CO1", "CC(=O)NN", "O=C1NC(=O)C(=O)N1", "Clc1ccc(Oc2ccccc2)cc1",
    "CSC", "c1ccsc1", "Cn1cccc1", "c1ccn2ccccc12", "Cn1cc(-n2cccc2)cc1"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(DONOR_ACCEPTOR_MOLECULES) - 1), st.lists(st.integers(0, 99), min_size=1, max_size=6),
       st.sampled_from(["smarts", "smiles", "counted", "full", "negated"]))
def test_pattern_floors_never_exceed_rdkit_values(index, walk, spelling):
    """A connected fragment of a molecule, as SMARTS, as SMILES with its hydrogens written, or as SMARTS stating
    every atom's element, aromaticity and hydrogen count ('[#7;a;H0]'), or these and its valence and degrees
    ('[#16;A;H0;v6;D4;X4]'), or the values it has not ('[#16;!v7;!D5;!X5]'): every listed molecule it matches has
    at least the donors, acceptors, polar surface
    and rings `pattern_floors` claims (RDKit's values), and so does every one holding the molecule's ring scaffold
    as the verifier matches it; and the fragment, which its own molecule matches, is never called unmatchable."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = Chem.MolFromSmiles(DONOR_ACCEPTOR_MOLECULES[index])
    atoms = [walk[0] % mol.GetNumAtoms()]
    for step in walk[1:]:
        around = sorted({n.GetIdx() for a in atoms for n in mol.GetAtomWithIdx(a).GetNeighbors()} - set(atoms))
        atoms += [around[step % len(around)]] if around else []
    counted = [f"[#{a.GetAtomicNum()};{'a' if a.GetIsAromatic() else 'A'};H{a.GetTotalNumHs()}]"
               for a in mol.GetAtoms()]
    full = [f"[#{a.GetAtomicNum()};{'a' if a.GetIsAromatic() else 'A'};H{a.GetTotalNumHs()};v{a.GetTotalValence()};"
            f"D{a.GetDegree()};X{a.GetTotalDegree()}]" for a in mol.GetAtoms()]
    negated = [f"[#{a.GetAtomicNum()};!v{a.GetTotalValence() + 1};!D{a.GetDegree() + 1};!X{a.GetTotalDegree() + 1}]"
               for a in mol.GetAtoms()]
    fragment = {"smarts": lambda: Chem.MolFragmentToSmarts(mol, atomsToUse=atoms),
                "smiles": lambda: Chem.MolFragmentToSmiles(mol, atomsToUse=atoms, allHsExplicit=True),
                "counted": lambda: Chem.MolFragmentToSmiles(mol, atomsToUse=atoms, atomSymbols=counted,
                                                            allBondsExplicit=True),
                "full": lambda: Chem.MolFragmentToSmiles(mol, atomsToUse=atoms, atomSymbols=full,
                                                         allBondsExplicit=True),
                "negated": lambda: Chem.MolFragmentToSmiles(mol, atomsToUse=atoms, atomSymbols=negated,
                                                            allBondsExplicit=True)}[spelling]()
    queries = [Chem.MolFromSmarts(fragment)]
    assert mol.HasSubstructMatch(queries[0]) and unmatchable(queries[0]) is None, fragment
    scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    queries += [scaffold] if scaffold.GetNumAtoms() else []
    for query in queries:
        sure = pattern_floors(query)
        for other in map(Chem.MolFromSmiles, DONOR_ACCEPTOR_MOLECULES):
            if other.HasSubstructMatch(query):
                assert PROPERTIES["hbd"].compute(other) >= sure["hbd"], (fragment, Chem.MolToSmiles(other))
                assert PROPERTIES["hba"].compute(other) >= sure["hba"], (fragment, Chem.MolToSmiles(other))
                assert PROPERTIES["tpsa"].compute(other) >= sure["tpsa"] - 1e-9, (fragment, Chem.MolToSmiles(other))
                assert PROPERTIES["rings"].compute(other) >= sure["rings"], (fragment, Chem.MolToSmiles(other))


@pytest.mark.parametrize("contains, refused", [
    ("[nH2]", "atom 1"), ("[cH2]", "atom 1"),  # an aromatic atom has two ring neighbours: n one H at most, c one
    ("[C;v5]", "atom 1"), ("[v5]", "atom 1"),  # no neutral atom here has valence 5 (S: 2, 4, 6)
    ("[#6;X5]", "atom 1"), ("[Cl;D2]", "atom 1"), ("[n;D1]", "atom 1"),  # more neighbours than the valence holds
    ("C[SH](=O)", "atom 2"),  # a hydrogen on S above valence 2 (`implausible`)
    ("[S;v6]", None), ("[S;D4]", None), ("[c;D3]", None), ("[v4]", None), ("[!C;v6]", None), ("[O;X2]", None),
    ("[C,N;H3]", None), ("[D5]", None),  # S of valence 6 with five neighbours (four single bonds and =O)
    # a negated valence or degree leaves every kind that can take another one: C=O's carbon, a nitrile's N, DMSO
    ("[#6;!X4]", None), ("[c;!D3]", None), ("[#7;!X3]", None), ("[S;!v2]", None), ("[C;!D4;H0]", None),
    ("[N;v4]", "atom 1"), ("[O;v1]", "atom 1"),  # a charged nitro N or N-oxide O: never returned (`implausible`)
    ("[N;X3](=O)=O", "atom 1"), ("c[#7;A](=O)=O", "atom 2"),  # a nitro group's N as SMARTS: four bonds, neutral
    ("[S;X4](=O)(=O)", None),  # a sulfone's S: six
])
def test_pattern_atoms_no_returned_molecule_has_are_refused(contains, refused):
    """What the query reads of element, aromaticity, hydrogens, valence and degree is matched against every atom
    the model writes (`_atom_kinds`)."""
    if refused is None:
        assert MoleculeRequest.parse({}, contains=contains).contains == contains
    else:
        with pytest.raises(RequestError, match=f"can never match: no atom the model writes matches {refused}"):
            MoleculeRequest.parse({}, contains=contains)


@pytest.mark.parametrize("contains, max_ring_size, refused", [
    ("[r8]", 7, "smallest ring has 8 atoms or more, larger than max_ring_size=7; allow it with max_ring_size=8"),
    ("[C;r8,r9]", 7, "smallest ring has 8 atoms"), ("CC[r9]", 8, "smallest ring has 9 atoms"),
    ("[r2]", None, r"can never match: atom 1 \(\[r2\]\) asks for a smallest ring no molecule here has \(none, or "
                   r"3 to 62 atoms\)"), ("[r3;r4]", None, "asks for a smallest ring no molecule"),
    ("[r8]", 8, None), ("[r8]", None, None), ("[r8,C]", 7, None), ("[!r8]", 7, None), ("[r0]", 7, None),
    ("[r7]", 7, None), ("[R2]", 7, None), ("[$([r8])]", 7, None),  # recursive SMARTS are not read
])
def test_ring_sizes_a_pattern_asks_for_are_checked(contains, max_ring_size, refused):
    if refused is None:
        assert MoleculeRequest.parse({}, contains=contains, max_ring_size=max_ring_size).contains == contains
    else:
        with pytest.raises(RequestError, match=refused):
            MoleculeRequest.parse({}, contains=contains, max_ring_size=max_ring_size)


def test_open_window_bounds_and_single_values():
    assert parse_window("3:", "logp") == (3.0, None)
    assert parse_window(":250", "mw") == (None, 250.0)
    assert parse_window("2", "rings") == (2.0, 2.0)
    for text, message in [("2", "logp: expected LO:HI, got '2'"), (":", "give at least one bound"),
                          ("1:2:3", "expected LO:HI"), ("", "give at least one bound")]:
        with pytest.raises(RequestError, match=message):
            parse_window(text, "logp")
    assert parse_window("\u22121:2", "logp") == (-1.0, 2.0)  # a typeset minus, copied from a paper
    with pytest.raises(RequestError, match="logp: window 100: is outside what any molecule"):
        MoleculeRequest.parse({"logp": parse_window("1e2:")})  # the open side left open, not 'inf'
    parse = MoleculeRequest.parse
    assert parse({"logp": (3, None), "mw": (None, 250), "qed": (0.5, math.inf)}).windows == {
        "logp": (3, 30), "mw": (16, 250), "qed": (0.5, 1)}  # open sides end at what any molecule can have
    assert parse({"logp": parse_window("1:inf")}).windows == {"logp": (1, 30)}
    # open on both sides is no condition: it must not switch off free generation's training prior
    assert parse({"logp": (None, None), "qed": (-math.inf, math.inf), "rings": (0, 100), "mw": (1, 200)}).windows == {
        "rings": (0, 31), "mw": (16, 200)}
    with pytest.raises(RequestError, match="logp: expected text 'LO:HI', got int 3"):
        parse_window(3, "logp")
    for window, message in [((2, None), "qed: window 2: is outside what any molecule here can have \\(0:1\\)"),
                            ((None, 10), "mw: window :10 is outside"), ((math.nan, 1), "must be numbers")]:
        with pytest.raises(RequestError, match=message):
            parse({"mw" if "mw" in message else "qed": window})


# ------------------------------------------------------------------------------------------ guidance
def ids(smiles: str) -> list[int]:
    return encode_tokens(split_smiles(smiles))


@pytest.mark.parametrize("prefix, complete, blamed", [
    ("CC)", False, 2),          # unmatched close parenthesis
    ("CC(", True, 2),           # branch left open when EOS came
    ("C1CC", True, 1),          # ring never closed: its opening is blamed
    ("c1cccc1", True, 5),       # aromatic ring that cannot be kekulized
    ("CN(C)(C)(C)C", False, 1),  # five-valent nitrogen
])
def test_prefix_diagnosis_blames_the_token_at_fault(prefix, complete, blamed):
    guidance = task.MoleculeGuidance(MoleculeRequest())
    assert guidance._check_prefix(ids(prefix), complete) == blamed


def test_valid_prefixes_and_molecules_pass_and_unwanted_ones_are_flagged():
    guidance = task.MoleculeGuidance(MoleculeRequest.parse({"mw": (300, 400)}))
    assert guidance._check_prefix(ids("CC(=O)Oc1cc"), False) is None
    assert guidance._check_prefix(ids(ASPIRIN), True) == -1  # valid, but 180 Da
    canvas = torch.full((2, task.CANVAS), task.PAD)
    canvas[0, :len(ids(ASPIRIN))] = torch.tensor(ids(ASPIRIN))
    canvas[0, len(ids(ASPIRIN))] = task.EOS
    canvas[1, :3] = torch.tensor(ids("CC)"))
    accepted = canvas != task.PAD
    accepted[0, len(ids(ASPIRIN))] = True
    bad = guidance.violations(canvas, accepted)
    assert bad[0, len(ids(ASPIRIN))] and bad[0].sum() >= 2  # cut at a random point, through the EOS
    assert bad[1, 2] and not bad[1, :2].any()
    assert guidance.verify(canvas).tolist() == [False, False]


@pytest.mark.parametrize("smiles", [ASPIRIN, "CC(C)c1ccccc1NC(=O)Nc1ccccc1Cl", "OCC[NH3+]", "c1ccncc1O",
                                    "CS(=O)(=O)N1CCN(C(=O)c2ccc(F)cc2)CC1", "O=C([O-])c1ccccc1"])
def test_atom_contributions_add_up_to_rdkit_logp_tpsa_and_donors(smiles):
    mol = Chem.MolFromSmiles(smiles)
    for name in ("logp", "tpsa", "hbd"):
        contributions = task.atom_contributions(mol, name)
        assert len(contributions) == mol.GetNumAtoms()
        assert sum(contributions) == pytest.approx(PROPERTIES[name].compute(mol), abs=1e-6)
    assert task.atom_contributions(mol, "qed") is None


def test_token_shares_add_up_to_each_molecules_logp_tpsa_and_donors():
    """Per token, the mean share over its atoms: for one molecule, atoms x share summed over its tokens is the
    property itself."""
    for smiles in (ASPIRIN, "CC(C)c1ccccc1NC(=O)Nc1ccccc1Cl", "Brc1ccc2[nH]ccc2c1", "CS(=O)(=O)N1CCOCC1"):
        mol = Chem.MolFromSmiles(smiles)
        shares = task.token_shares([smiles])
        assert sum(row[0] for row in shares.values()) == mol.GetNumAtoms()
        for k, name in enumerate(task.LEANED, start=1):
            total = sum(row[0] * row[k] for row in shares.values())
            assert total == pytest.approx(PROPERTIES[name].compute(mol), abs=1e-3 * mol.GetNumAtoms())
    # and each share belongs to its own token's atoms (the tokens follow RDKit's atom order)
    mol = Chem.MolFromSmiles("Brc1ccc2[nH]ccc2c1")  # canonical; the input below is not
    shares = task.token_shares(["c1cc2cc[nH]c2cc1Br"])
    bromine = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "Br")
    pyrrole_n = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "N")
    assert shares["Br"][1] == pytest.approx(task.atom_contributions(mol, "logp")[bromine], abs=1e-4)
    assert shares["[nH]"][2] == pytest.approx(task.atom_contributions(mol, "tpsa")[pyrrole_n], abs=1e-4)
    assert shares["[nH]"][2] > 15 and shares["c"][2] == 0.0
    assert shares["[nH]"][3] == 1.0 and shares["c"][3] == 0.0


def test_lean_directions_are_standardized_over_moses_atoms_and_point_the_chemical_way():
    directions = task._lean_directions().double()
    ids = [task.TOKENIZER.token_to_id(t) for t in task.TOKEN_SHARES]
    counts = torch.tensor([row[0] for row in task.TOKEN_SHARES.values()], dtype=torch.float64)
    weights = counts / counts.sum()
    assert torch.allclose(directions[:, ids] @ weights, torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(directions[:, ids] ** 2 @ weights, torch.ones(3, dtype=torch.float64), atol=1e-4)
    others = torch.ones(directions.shape[1], dtype=torch.bool)
    others[ids] = False
    assert directions[:, others].eq(0).all()  # bonds, digits, parentheses, EOS and prompt tokens never lean
    logp, tpsa, hbd = (dict(zip(task.TOKEN_SHARES, row.tolist())) for row in directions[:, ids])
    assert logp["Br"] > logp["Cl"] > logp["c"] > logp["O"] > logp["N"]
    assert min(tpsa["O"], tpsa["N"], tpsa["n"]) > 0 > tpsa["C"]
    assert hbd["[nH]"] > hbd["N"] > 0 > hbd["n"]


def test_lean_moves_toward_the_windows_of_additive_properties_only():
    lean = task.Lean({"logp": (5, 6.5), "mw": (300, 400), "tpsa": (20, 30)})
    assert set(lean.strength) == {"logp", "tpsa"} and lean.bias(torch.device("cpu")) is None
    lean.observe({"logp": True, "mw": True})  # below both: logP leans up; MW is no sum over atoms
    lean.observe({"logp": True, "tpsa": False})  # and TPSA above its window: it leans down
    lean.update()  # once a pass, by the shares of what was seen: TPSA's hit inside outweighs its miss above
    assert lean.strength == pytest.approx({"logp": task.LEAN_STEP, "tpsa": 0.0})
    lean.observe({"tpsa": False})
    lean.observe({"logp": True, "tpsa": False})
    lean.observe({"logp": True, "tpsa": False})
    lean.update()  # logP: two misses below, one hit (weighing HIT_WEIGHT misses); TPSA: three misses above
    logp = max(0.0, 1 + 2 / 3 - task.HIT_WEIGHT / 3) * task.LEAN_STEP
    assert logp > 0 and lean.strength == pytest.approx({"logp": logp, "tpsa": -task.LEAN_STEP})
    lean.update()  # nothing seen: nothing moves
    assert lean.strength == pytest.approx({"logp": logp, "tpsa": -task.LEAN_STEP})
    lean.observe({})  # both inside: back toward 0, and never past it
    lean.bias(torch.device("cpu"))  # the pass's bias updates first
    assert lean.strength == pytest.approx({"logp": 0.0, "tpsa": 0.0}, abs=1e-12)
    for _ in range(5):
        lean.observe({"logp": True, "tpsa": False})
        bias = lean.bias(torch.device("cpu"))
    vocab = task.TOKENIZER.get_vocab_size()
    assert bias.shape == (1, 1, vocab)
    token = task.TOKENIZER.token_to_id
    assert bias[0, 0, token("Cl")] > bias[0, 0, token("c")] > 0 > bias[0, 0, token("N")]
    assert bias[0, 0, token("(")] == 0
    for _ in range(int(3 * task.LEAN_LIMIT / task.LEAN_STEP)):
        lean.observe({"logp": True})
        lean.update()
    assert lean.strength["logp"] == task.LEAN_LIMIT


def test_a_window_at_the_floor_the_model_meets_leans_no_further_than_the_misses_outweigh_the_hits():
    """Donors 0-1: nothing can lie below it, so misses push one way only; the molecules inside pull back."""
    lean = task.Lean({"hbd": (0, 1)})
    for _ in range(1000):  # as many inside as above each pass: it stays within a step of 0
        lean.observe({"hbd": False})
        lean.observe({})
        lean.update()
    assert abs(lean.strength["hbd"]) <= task.LEAN_STEP


@pytest.mark.parametrize("windows", [{}, {"mw": (300, 340)}, {"qed": (0.8, 1)}])
def test_requests_without_a_leaned_window_are_never_leaned(windows):
    guidance = task.MoleculeGuidance(MoleculeRequest.parse(windows))
    guidance._check_prefix(ids(ASPIRIN), True)  # a settled molecule
    assert guidance.lean.strength == {} and guidance.bias(torch.zeros(1, task.CANVAS, dtype=torch.long)) is None


def test_the_lean_learns_from_each_settled_molecule_once_a_round_and_never_from_an_argmax():
    guidance = task.MoleculeGuidance(MoleculeRequest.parse({"logp": (5, 6.5)}))
    canvas = torch.full((1, task.CANVAS), task.PAD)
    canvas[0, :len(ids(ASPIRIN))] = torch.tensor(ids(ASPIRIN))
    guidance.verify(canvas)  # the argmax of a canvas: judged, not learnt from
    assert guidance.lean._seen["logp"] == [0.0, 0, 0]
    guidance._check_prefix(ids(ASPIRIN), False)  # not complete yet
    assert guidance.lean._seen["logp"] == [0.0, 0, 0]
    for _ in range(2):  # settled, and settled again: counted once (logP 1.3, below the window)
        guidance._check_prefix(ids(ASPIRIN), True)
    assert guidance.lean._seen["logp"] == [1.0, 0, 1]
    guidance._check_prefix(ids("CC(=O)Oc1ccccc1C(=O"), True)  # not a valid molecule: nothing to learn from
    assert guidance.lean._seen["logp"] == [1.0, 0, 1]
    guidance.bias(canvas)
    assert guidance.lean.strength["logp"] == pytest.approx(task.LEAN_STEP)


def test_a_window_beyond_the_training_molecules_is_reached_by_leaning(designer):
    """MOSES has almost no molecule of logP above 5: before the lean, 5 molecules of logP 5-6.5 took 264 to 664
    canvases (see DIRECTED_TRIES), and these 3 none in 96; leaning, they come within two rounds of 32."""
    with pytest.warns(UnlikelyRequestWarning):
        result = designer.generate(3, logp=(5.2, 7), seed=3, budget=96)
    assert len(result) == 3 and all(5.2 <= m.properties["logp"] <= 7 for m in result)


def test_misses_name_each_condition_a_molecule_breaks_and_agree_with_verify():
    request = MoleculeRequest.parse({"logp": (3, None), "hbd": (0, 1)}, contains="[OH]", scaffold="c1ccncc1",
                                         avoid="pains")
    cases = {"OCCCO": ["logp below 3", "hbd above 1", "no decorated c1ccncc1"],  # two OH donors
             "Cc1ccncc1": ["logp below 3", "no [OH]"],
             "CCCCCCCCc1ccc(O)nc1": []}
    for smiles, missed in cases.items():
        mol = Chem.MolFromSmiles(smiles)
        assert request.misses(mol) == missed and request.verify(mol)[0] == (not missed), smiles
    big_ring = MoleculeRequest.parse(max_ring_size=6).misses(Chem.MolFromSmiles("C1CCCCCCC1"))
    assert big_ring == ["a ring over 6 atoms"]
    catechol = Chem.MolFromSmiles("Oc1ccccc1O")  # a PAINS alert
    assert MoleculeRequest.parse(avoid="pains").misses(catechol) == ["a PAINS alert"]


def test_a_budget_run_out_says_what_the_valid_molecules_missed(designer):
    """No verified molecule in the budget (QED above 0.96 is beyond the MOSES molecules): the result and the CLI
    say what the canvases that ended on a valid molecule missed."""
    with pytest.warns(UnlikelyRequestWarning):
        result = designer.generate(1, qed=(0.96, 1), seed=0, budget=8)
    assert result.exhausted and len(result) == 0 and 0 < result.rejected <= 8
    assert result.misses == {"qed below 0.96": result.rejected}
    assert result.missed() == f"{plural(result.rejected, 'canvas', 'canvases')} ended on a valid molecule missing " \
                              f"the request (qed below 0.96 in {result.rejected})"
    assert result.to_dict()["misses"] == result.misses
    cli = CliRunner().invoke(app, ["molecules", "-n", "1", "--qed", "0.96:", "--budget", "8", "--seed", "0"])
    assert cli.exit_code == 1 and "ended on a valid molecule missing the request (qed below 0.96 in" in cli.stderr


def test_on_pass_sees_every_pass_of_each_round_and_changes_nothing(designer):
    passes, rounds = [], []
    watched = designer.generate(2, logp=(2, 3), seed=4, budget=64, on_pass=passes.append,
                                on_round=lambda tried, found: rounds.append(len(passes)))
    plain = designer.generate(2, logp=(2, 3), seed=4, budget=64)
    assert [m.smiles for m in watched] == [m.smiles for m in plain]
    starts = [i for i, step in enumerate(passes) if step == 1]
    assert starts == [0, *rounds[:-1]] and rounds[-1] == len(passes)  # each round counts its passes from 1
    assert all(b == a + 1 for a, b in zip(passes, passes[1:]) if b != 1)
    assert max(passes) <= designer.config.max_denoising_steps
    with pytest.raises(RequestError, match="on_pass"):
        designer.generate(1, on_pass="print")


def test_a_molecule_missing_its_logp_window_renoises_its_most_polar_atoms_one_more_each_repeat():
    smiles = "OCc1ccc(N)cc1"  # logP 0.7: the O and the N pull it down the most
    guidance = task.MoleculeGuidance(MoleculeRequest.parse({"logp": (3, 4)}))
    canvas = torch.full((1, task.CANVAS), task.PAD)
    canvas[0, :len(ids(smiles))] = torch.tensor(ids(smiles))
    canvas[0, len(ids(smiles))] = task.EOS
    accepted = canvas != task.PAD
    accepted[0, len(ids(smiles))] = True
    first = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    second = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    third = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    polar = [i for i, t in enumerate(split_smiles(smiles)) if t in ("O", "N")]
    n = len(ids(smiles))
    assert len(first) == 1 and first[0] in polar
    assert second == [n - 2, n - 1, n]  # the same string again: logP also grows with length, so its end re-opens
    assert set(polar) < set(third) and len(third) == 3  # then three atoms, the polar ones first
    # past the directed tries it falls back to a random stretch through the EOS
    for _ in range(task.DIRECTED_TRIES):
        last = guidance.violations(canvas, accepted)[0]
    assert last[len(ids(smiles))]
    # too high instead: the most lipophilic atoms go first, never the polar ones
    high = task.MoleculeGuidance(MoleculeRequest.parse({"logp": (-3, -2)}))
    blamed = high.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    assert len(blamed) == 1 and blamed[0] not in polar


def test_a_molecule_too_light_for_its_window_reopens_its_end_to_grow():
    smiles = "CCOc1ccccc1"  # 122 Da
    guidance = task.MoleculeGuidance(MoleculeRequest.parse({"mw": (300, 400)}))
    n = len(ids(smiles))
    canvas = torch.full((1, task.CANVAS), task.PAD)
    canvas[0, :n] = torch.tensor(ids(smiles))
    canvas[0, n] = task.EOS
    accepted = torch.ones_like(canvas, dtype=torch.bool)  # EOS and the padding after it settled too
    first = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    assert first == list(range(n - 1, n + 4))  # the last token, the EOS and room after it
    second = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    assert second == list(range(n - 2, n + 6))  # more of both on a repeat
    heavy = task.MoleculeGuidance(MoleculeRequest.parse({"mw": (10, 100)}))
    assert heavy.violations(canvas, accepted)[0, n]  # too heavy: the random stretch through the EOS as before


# A PAINS catechol (catechol_A) and a BRENK Michael acceptor; RDKit's catalogs match both.
CATECHOL, MICHAEL = "CCc1ccc(O)c(O)c1", "CCOC(=O)C=CC(=O)Nc1ccccc1"


def test_structural_alert_catalogs_are_named_in_any_case_and_rule_out_their_matches():
    request = MoleculeRequest.parse(avoid="pains, Brenk,PAINS")
    assert request.avoid == ("PAINS", "BRENK")
    assert MoleculeRequest.parse(avoid=["chembl_glaxo"]).avoid == ("CHEMBL_Glaxo",)
    assert MoleculeRequest.parse(avoid=[]).avoid == () == MoleculeRequest().avoid  # nothing to avoid
    assert MoleculeRequest.parse(avoid={"pains", "BRENK"}).avoid == ("BRENK", "PAINS")  # a set, sorted
    with pytest.raises(RequestError, match="avoid: empty"):
        MoleculeRequest.parse(avoid=[" "])
    for smiles in (CATECHOL, MICHAEL):
        assert MoleculeRequest().verify(Chem.MolFromSmiles(smiles))[0]
        assert not request.verify(Chem.MolFromSmiles(smiles))[0]
    assert MoleculeRequest.parse(avoid="PAINS").verify(Chem.MolFromSmiles(MICHAEL))[0]  # BRENK only
    assert request.verify(Chem.MolFromSmiles("CC(C)Cc1ccc(C(C)C(=O)O)cc1"))[0]  # ibuprofen: no alert
    assert not request.verify(Chem.MolFromSmiles(ASPIRIN))[0]  # Brenk's phenol ester


def test_a_fragment_that_carries_an_alert_to_avoid_is_warned_about():
    azobenzene = "c1ccc(N=Nc2ccccc2)cc1"  # PAINS azo_A: no decoration removes it
    (message,) = MoleculeRequest.parse(scaffold=azobenzene, avoid="PAINS").unlikely()
    assert message.startswith(f"scaffold: {azobenzene!r} itself carries the structural alert azo_A")
    assert not MoleculeRequest.parse(scaffold=azobenzene, avoid="ZINC").unlikely()
    result = CliRunner().invoke(app, ["molecules", "-n", "1", "--contains", "Oc1ccccc1O", "--avoid", "pains",
                                      "--budget", "8", "--seed", "0"])
    assert "warning: --contains: 'Oc1ccccc1O' itself carries the structural alert catechol_A" in result.stderr
    assert "verified molecules (no PAINS alert) from 8 canvases" in result.stderr


def test_a_pattern_too_long_to_pin_is_warned_about_and_one_longer_than_the_canvas_refused():
    imatinib = "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1"  # 59 tokens: too long to pin
    (message,) = MoleculeRequest.parse(contains=imatinib).unlikely()
    assert message.startswith(f"contains: {imatinib!r} is only matched, not written on the canvas, and takes at "
                              "least 59 tokens, more than 99 % of the training molecules (45)")
    assert MoleculeRequest.parse(contains="c1ccccc1").unlikely() == []
    with pytest.raises(RequestError, match="contains: the substructure C{63} has 63 atoms; a molecule on the "
                                                "canvas has at most 62 tokens"):
        MoleculeRequest.parse(contains="C" * 63)


def test_a_molecule_with_an_alert_renoises_the_alert_atoms():
    tokens = split_smiles(MICHAEL)
    guidance = task.MoleculeGuidance(MoleculeRequest.parse(avoid="BRENK"))
    n = len(tokens)
    canvas = torch.full((1, task.CANVAS), task.PAD)
    canvas[0, :n] = torch.tensor(ids(MICHAEL))
    canvas[0, n] = task.EOS
    accepted = torch.ones_like(canvas, dtype=torch.bool)
    alert = alert_atoms(Chem.MolFromSmiles(MICHAEL), ("BRENK",))  # C=CC(=O): atoms 5-8
    assert alert == [5, 6, 7, 8]
    atom_positions = [i for i, t in enumerate(tokens) if t[0].isalpha()]
    blamed = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    assert len(blamed) == 1 and blamed[0] in [atom_positions[a] for a in alert]
    again = guidance.violations(canvas, accepted)[0].nonzero().flatten().tolist()
    assert len(again) == 2 and set(again) <= {atom_positions[a] for a in alert}


def test_designed_molecules_match_no_alert_of_the_catalogs_avoided(designer):
    request = MoleculeRequest.parse({"logp": (2, 3)}, avoid="PAINS,BRENK")
    result = designer.design(4, request, seed=3)
    assert len(result) == 4
    catalog = alert_catalog(("PAINS", "BRENK"))
    for m in result:
        check(m, request)
        assert not catalog.HasMatch(m.mol)


# ------------------------------------------------------------------------------------------ the designer
def check(molecule, request: MoleculeRequest) -> None:
    mol = Chem.MolFromSmiles(molecule.smiles)
    assert mol is not None and Chem.SanitizeMol(mol) == Chem.SanitizeFlags.SANITIZE_NONE
    assert implausible(mol) is None  # no hydrogen RDKit had to invent
    assert molecule.verified and request.verify(mol)[0] and request.verify(molecule.mol)[0]
    assert Chem.MolToSmiles(molecule.mol) == molecule.smiles  # the Mol handed back is the SMILES handed back
    for name, (lo, hi) in request.windows.items():
        assert lo <= PROPERTIES[name].compute(mol) <= hi


def test_free_generation_returns_distinct_verified_molecules(designer):
    result = designer.generate(8, seed=0)
    assert len(result) == 8 and not result.exhausted
    assert len({m.smiles for m in result}) == 8
    for m in result:
        check(m, MoleculeRequest())



def test_free_generation_draws_bins_scaffolds_and_lengths_of_training_molecules(designer):
    """Each canvas gets a training molecule's property bins, scaffold and length: EOS pinned there, and the
    guided canvases fill exactly that many tokens."""
    from diffsolve.core import generate

    generator = torch.Generator().manual_seed(3)
    prompt, (pinned, values) = task.training_draws(2000, generator)
    lengths = (~pinned).sum(1)
    assert (values[torch.arange(2000), lengths] == task.EOS).all() and (values[pinned] == task.EOS).sum() == 2000
    assert lengths.min() >= 13 and lengths.max() <= 54 and abs(lengths.float().mean() - 35.4) < 0.3
    assert task.TYPICAL_TOKENS == int(task.training_prompts()[1].float().mean())  # the constant the layouts use
    bins = prompt[:, 1:1 + len(task.CONDITIONED)]
    assert not any((bins[:, k] == task.UNSPECIFIED[name]).any() for k, name in enumerate(task.CONDITIONED))
    mw = bins[:, task.CONDITIONED.index("mw")] - task.BIN_BASE["mw"]
    assert lengths[mw == mw.max()].float().mean() > lengths[mw == mw.min()].float().mean() + 10  # drawn together
    scaffold = prompt[:, 1 + len(task.CONDITIONED):]
    assert (scaffold[:, 0] == task.SCAFFOLD).float().mean() > 0.99  # MOSES molecules nearly all have a ring
    scaffold_tokens = (scaffold[:, 1:] != task.PAD).sum(1)
    # the scaffold's canonical SMILES may write a ring closure or [nH] the molecule's does not: a few tokens over
    assert (scaffold_tokens <= lengths).float().mean() > 0.99 and (scaffold_tokens <= lengths + 3).all()
    assert len({tuple(row) for row in scaffold.tolist()}) > 1500  # many scaffolds, not a few
    request = MoleculeRequest()
    prompt, layouts = task.training_draws(16, generator)
    guidance = task.MoleculeGuidance(request, generator, layouts)
    out = generate(designer.model, prompt, designer.config, guidance=guidance,
                   generator=torch.Generator().manual_seed(0))
    drawn = (~layouts[0]).sum(1).tolist()
    decoded = task.decode(out.canvas)
    assert sum(s is not None for s in decoded) >= 8
    assert all(len(split_smiles(s)) == n for s, n in zip(decoded, drawn) if s is not None)
    assert designer.training_prior and not MoleculeDesigner(designer.model, training_prior=False).training_prior

windows = st.sampled_from([("logp", (1.0, 3.0)), ("mw", (250.0, 330.0)), ("tpsa", (30.0, 80.0)),
                           ("rings", (2, 3)), ("qed", (0.6, 1.0)), ("hbd", (0, 1))])


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(windows, min_size=1, max_size=2, unique_by=lambda w: w[0]), st.integers(0, 10**6),
       st.sampled_from([None, "c1ccccc1", "C(=O)N"]))
def test_every_returned_molecule_satisfies_its_request(designer, chosen, seed, contains):
    request = MoleculeRequest.parse(dict(chosen), contains=contains)
    result = designer.design(2, request, seed=seed, budget=128)
    assert result.canvases <= 128
    # some combinations are rare (mw 250-330, 2-3 rings and a pinned amide: about 1.5 % of canvases), so a short
    # result is allowed, but only with the budget spent and said so
    assert len(result) == 2 or (result.exhausted and result.canvases == 128)
    for m in result:
        check(m, request)


def test_scaffold_decoration_keeps_the_scaffold(designer):
    request = MoleculeRequest.parse(scaffold="c1ccccc1")
    result = designer.design(3, request, seed=1, budget=128)
    assert len(result) == 3
    core = Chem.MolFromSmiles("c1ccccc1")
    for m in result:
        check(m, request)
        assert m.mol.HasSubstructMatch(core)


@pytest.mark.parametrize("fragment, keep", [
    ("O=S(=O)(NCCc1cncs1)c1ccccc1", False), ("c1csc(CN2CCOC3C(Cn4cnnc4)CCC32)c1", False), ("S(=O)(=O)N", False),
    ("CC(C)(C)C", False), ("c1ccccc1", False), ("C(F)(F)(F)Cl", False),
    ("C(=O)[OH]", True), ("c1cc[nH]c1C(=O)[NH2]", True), ("[NH2]c1ccccc1", True)])
def test_fragment_layouts_keep_the_fragment_and_bond_only_to_spare_hydrogens(fragment, keep):
    """Filling every free position with carbon always gives a valid molecule that contains the fragment:
    free stretches only ever replace hydrogens the fragment has to spare; a `contains` pattern's bracket atoms
    keep theirs ('[OH]' stays an OH, so the filled molecule still matches it as SMARTS)."""
    pinned, values = task.fragment_layouts(fragment, 40, torch.Generator().manual_seed(0), keep)
    core = Chem.MolFromSmarts(fragment) if keep else Chem.MolFromSmiles(fragment)
    has_hydrogen = any(spare_hydrogens(Chem.MolFromSmiles(fragment), keep))
    for row_pinned, row in zip(pinned, values):
        end = int((row == task.EOS).nonzero()[0])
        assert row_pinned[end:].all() and (row[end + 1:] == task.PAD).all()
        free = ~row_pinned[:end]
        assert bool(free.any()) == has_hydrogen
        filled = "".join("C" if f else task.ID_TO_TOKEN[t] for t, f in zip(row[:end].tolist(), free.tolist()))
        mol = Chem.MolFromSmiles(filled)
        assert mol is not None and mol.HasSubstructMatch(core), filled
        assert mol.GetNumAtoms() == core.GetNumAtoms() + int(free.sum())


def test_pinned_layouts_survive_guidance_and_decorate_an_unseen_scaffold(designer):
    """A MOSES scaffold-test-set scaffold: the layouts make decoration routine (the prompt alone found none)."""
    scaffold = "O=C(NCc1cnn(-c2ccccc2)c1)c1ccccc1"
    request = MoleculeRequest.parse(scaffold=scaffold)
    result = designer.design(3, request, seed=0, budget=64)
    assert len(result) == 3
    for m in result:
        check(m, request)
        assert m.smiles != Chem.MolToSmiles(Chem.MolFromSmiles(scaffold))
    sulfonamide = MoleculeRequest.parse(contains="S(=O)(=O)N")
    assert sulfonamide.fragment == "S(=O)(=O)N"
    acid = MoleculeRequest.parse(contains="C(=O)[OH]")  # '[OH]' is no token: written as RDKit writes it
    assert acid.fragment == "C(=O)[OH]"
    assert MoleculeRequest.parse(contains="[OH]C(=O)[OH]").fragment == "[OH]C(=O)[OH]"  # only ever itself
    # no hydrogen to spare: pinned, 'S(=O)=O' would be the whole canvas (every canvas SO2); it is matched instead
    assert MoleculeRequest.parse(contains="S(=O)=O").fragment is None
    assert MoleculeRequest.parse(contains="ClC(Cl)(Cl)Cl").fragment == "ClC(Cl)(Cl)Cl"  # only ever itself
    found = designer.design(2, sulfonamide, seed=0, budget=64)
    assert len(found) == 2
    for m in found:
        check(m, sulfonamide)


def test_a_request_built_by_hand_is_checked_as_parse_checks_it(designer):
    parsed = MoleculeRequest.parse({"logp": (1, 2), "hbd": (0.5, 2)}, contains="C(=O)N",
                                        scaffold="C1=CC=CC=C1", avoid="pains")
    assert parsed.checked() == parsed  # a parsed request passes through unchanged
    for request, message in ((MoleculeRequest(contains="C(("), "not a valid SMARTS"),  # was a Boost traceback
                             (MoleculeRequest(windows={"logp": (3, 1)}), "lower bound 3 is above"),  # the budget
                             (MoleculeRequest(avoid=("PAINS_Z",)), "unknown catalog")):  # a KeyError
        with pytest.raises(RequestError, match=message):
            designer.design(1, request, seed=0, budget=8)


def test_ring_size_limit_is_enforced(designer):
    request = MoleculeRequest.parse(max_ring_size=6)
    result = designer.design(3, request, seed=2, budget=128)
    assert len(result) == 3
    for m in result:
        check(m, request)
        assert max((len(r) for r in m.mol.GetRingInfo().AtomRings()), default=0) <= 6
    with pytest.raises(RequestError, match="at least 3"):
        MoleculeRequest.parse(max_ring_size=2)


def test_rings_default_to_the_training_data_sizes_and_a_larger_scaffold_ring_is_named():
    assert MoleculeRequest.parse().max_ring_size == 7
    macrocycle = "C1CCCCCCCCCCC1"  # 12 atoms
    assert not MoleculeRequest.parse().verify(Chem.MolFromSmiles(macrocycle))[0]
    with pytest.raises(RequestError, match="ring of 12 atoms.*max_ring_size=7"):
        MoleculeRequest.parse(scaffold=macrocycle)
    assert MoleculeRequest.parse(scaffold=macrocycle, max_ring_size=None).max_ring_size is None
    result = CliRunner().invoke(app, ["molecules", "--scaffold", macrocycle])
    assert result.exit_code == 2 and "--max-ring-size 12 or 0" in result.stderr


# ------------------------------------------------------------------------------------------ CLI
def test_cli_json_lines_are_verified_and_in_the_window():
    result = CliRunner().invoke(app, ["molecules", "-n", "3", "--logp", "1:4", "--format", "json", "--seed", "0"])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(r["verified"] and 1 <= r["logp"] <= 4 for r in rows)
    assert "3/3 verified molecules" in result.stderr


def test_cli_training_prior_can_be_turned_off():
    runs = {name: CliRunner().invoke(app, ["molecules", "-n", "4", "--format", "smi", "--seed", "5", *flags])
            for name, flags in (("default", []), ("off", ["--no-training-prior"]))}
    assert all(r.exit_code == 0 for r in runs.values()), [r.stderr for r in runs.values()]
    smiles = {name: r.stdout.split() for name, r in runs.items()}
    assert all(len(s) == 4 and all(Chem.MolFromSmiles(x) for x in s) for s in smiles.values())
    assert smiles["default"] != smiles["off"]  # other prompts, other molecules
    assert "atypical" in runs["default"].stderr  # the summary says what the acceptance and the novelty filter left out


def test_cli_molecule_help_fits_80_columns():
    """Every option's name and its whole help are readable in an 80-column terminal (no '…' cut)."""
    result = CliRunner().invoke(app, ["molecules", "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    assert all(flag in result.stdout for flag in ("--no-training-prior", "--no-match-training", "--allow-known"))


def test_cli_acceptance_and_novelty_filter_can_be_turned_off():
    result = CliRunner().invoke(app, ["molecules", "-n", "4", "--format", "smi", "--seed", "5",
                                      "--no-match-training", "--allow-known"])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split()) == 4 and "left out" not in result.stderr


def test_cli_writes_sdf_and_a_picture(tmp_path):
    out, image = tmp_path / "mols.sdf", tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["molecules", "-n", "2", "--format", "sdf", "--out", str(out),
                                      "--image", str(image), "--seed", "3"])
    assert result.exit_code == 0, result.stderr
    mols = [m for m in Chem.SDMolSupplier(str(out))]
    assert len(mols) == 2 and all(m is not None and m.HasProp("qed") for m in mols)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "mols.sdf"]  # no temporary file is left


def test_rdkit_messages_are_silenced_only_inside_our_calls(designer, capfd):
    """Invalid candidates are expected while designing; a user's own RDKit errors must still show."""
    capfd.readouterr()
    designer.design(2, MoleculeRequest.parse(), seed=1, budget=128)
    with pytest.raises(RequestError):
        MoleculeRequest.parse(scaffold="c1cc")
    assert "SMILES Parse Error" not in capfd.readouterr().err
    assert Chem.MolFromSmiles("c1cc") is None
    assert "SMILES Parse Error" in capfd.readouterr().err


def test_one_threads_quiet_call_ending_does_not_unmute_anothers(capfd):
    """RDKit's log is one for the process: thread A's quiet call ends while thread B's is still parsing rejected
    candidates; B's parse errors stay silent, and once both have ended the user's own errors show again."""
    import threading

    from diffsolve.tasks.molecule_data import rdkit_quiet

    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()

    @rdkit_quiet
    def a():  # blocks the log first, and ends first
        a_inside.set()
        b_inside.wait(10)

    @rdkit_quiet
    def b():
        b_inside.set()
        a_done.wait(10)
        return Chem.MolFromSmiles("C1CC(")  # a rejected candidate, parsed after A's quiet call ended

    capfd.readouterr()
    first, second = threading.Thread(target=a), threading.Thread(target=b)
    first.start()
    a_inside.wait(10)
    second.start()
    first.join()
    a_done.set()
    second.join()
    assert "SMILES Parse Error" not in capfd.readouterr().err
    assert Chem.MolFromSmiles("C1CC(") is None
    assert "SMILES Parse Error" in capfd.readouterr().err


def test_a_result_draws_its_molecules_in_a_grid(designer):
    result = designer.generate(3, seed=5)
    assert len(result) == 3
    assert result.draw().size == (3 * 260, 220)  # one row, no wider than the molecules drawn
    assert result.draw(per_row=1).size == (260, 3 * 220)
    assert result.draw(limit=2, per_row=1).size == (260, 2 * 220)
    assert result.draw(per_row=2).size == (2 * 260, 2 * 220)
    svg = result.draw(["qed"], svg=True)
    assert svg.startswith("<?xml") and "class='legend'" in svg  # RDKit draws the legend's letters as paths
    assert "class='legend'" in result.draw([], svg=True)  # the molecule's number, as in the output, stays
    assert result.draw(list(PROPERTIES)).size == (3 * 260, 220 + 2 * 14)  # eight properties: three lines
    ring = Chem.MolFromSmarts("[R]")
    marked = [m for m in result if m.mol.HasSubstructMatch(ring)]
    if marked:  # a highlighted substructure changes the picture
        assert result.draw(highlight=[ring]).tobytes() != result.draw().tobytes()
    for bad, message in [(["weight"], "properties: expected names among logp, .*got \\['weight'\\]"),
                         (None, "got None"), (5, "got 5")]:
        with pytest.raises(RequestError, match=message):
            result.draw(bad)
    with pytest.raises(RequestError, match="limit must be at least 1"):
        result.draw(limit=0)
    with pytest.raises(RequestError, match="svg must be True or False"):
        result.draw(svg="yes")
    for highlight in (["c1ccccc1"], None, Chem.MolFromSmiles("C")):
        with pytest.raises(RequestError, match="highlight: expected a list of RDKit query molecules"):
            result.draw(highlight=highlight)
    assert result[0].to_dict(["qed"]) == {"smiles": result[0].smiles, "verified": True,
                                          "qed": result[0].properties["qed"], "passes": result[0].passes}
    assert list(result[0].to_dict()) == ["smiles", "verified", *result[0].properties, "passes"]
    assert result[0].to_dict("qed") == result[0].to_dict(["qed"])  # one name, as draw takes it
    for bad in (["LogP"], "LogP", 5):
        with pytest.raises(RequestError, match="names: expected property names among logp"):
            result[0].to_dict(bad)
    # in a notebook: a repr of one line over the grid
    import base64
    import html

    from PIL import Image

    shown = result._repr_html_()
    assert shown.startswith(f"<p><code>{html.escape(repr(result))}</code></p><img src='data:image/png;base64,")
    picture = base64.b64decode(shown.split("base64,")[1].rstrip("'>"))
    assert Image.open(io.BytesIO(picture)).tobytes() == result.draw().tobytes()
    smiles = ", ".join(m.smiles for m in result)
    assert repr(result) == (f"DesignResult(3/3 molecules from {result.canvases} canvases in {result.seconds:.1f} s, "
                            f"seed=5: [{smiles}])")
    many = replace(result, molecules=result.molecules * 4, requested=20, exhausted=True)
    assert repr(many).endswith(f"seed=5, budget exhausted: [{smiles}, ... (9 more)])")
    nothing = replace(result, molecules=[])
    assert nothing._repr_html_() is None and repr(nothing).endswith(": [])")
    copied = copy.copy(DesignInterrupted(many))  # as multiprocessing and joblib pass it on
    assert copied.result is many and f"{copied}" == "stopped with 12/20 molecules from " + f"{many.canvases} canvases"


def test_cli_takes_the_format_from_the_out_suffix_and_draws_svg(tmp_path):
    out, image = tmp_path / "mols.sdf", tmp_path / "grid.svg"
    result = CliRunner().invoke(app, ["molecules", "-n", "2", "--out", str(out), "--image", str(image),
                                      "--seed", "3", "--hbd", "1"])
    assert result.exit_code == 0, result.stderr
    mols = [m for m in Chem.SDMolSupplier(str(out))]
    assert len(mols) == 2 and all(m.GetProp("hbd") == "1" for m in mols)
    assert "<svg" in image.read_text() and image.read_text().rstrip().endswith("</svg>")
    clash = CliRunner().invoke(app, ["molecules", "-n", "1", "--format", "csv", "--out", str(out)])
    assert clash.exit_code == 2 and "the suffix says sdf but --format is csv" in clash.stderr


def test_cli_output_follows_links_refuses_unknown_suffixes_and_falls_back_to_stdout(designer, tmp_path, capsys):
    from diffsolve.solvers.molecule_cli import _write_molecules

    target, link = tmp_path / "target.smi", tmp_path / "link.smi"
    target.write_text("C\n")
    link.symlink_to(target.name)
    result = CliRunner().invoke(app, ["molecules", "-n", "1", "--seed", "0", "--budget", "32", "--out", str(link)])
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and target.read_text() != "C\n" and Chem.MolFromSmiles(target.read_text().strip())
    refused = CliRunner().invoke(app, ["molecules", "-n", "1", "--out", str(tmp_path / "m.csv.gz")])
    assert refused.exit_code == 2 and "the suffix .gz names no format" in refused.stderr
    assert CliRunner().invoke(app, ["molecules", "-n", "1", "--budget", "1", "--format", "SMI"]).exit_code in (0, 1)

    found = designer.generate(1, seed=0, budget=32).molecules
    assert not _write_molecules(found, ["logp"], "smi", Path("/dev/full"))  # a full disk
    shown = capsys.readouterr()
    assert shown.out == f"{found[0].smiles}\n" and "the molecule is printed on stdout instead" in shown.err


def test_cli_budget_exhaustion_exits_1_with_what_was_found():
    result = CliRunner().invoke(app, ["molecules", "-n", "50", "--budget", "8", "--format", "csv", "--seed", "0"])
    assert result.exit_code == 1
    assert "budget exhausted" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("smiles,verified") and len(lines) - 1 <= 8


@pytest.mark.parametrize("args, message", [
    (["--logp", "5:1"], "above upper bound"),
    (["--mw", "abc"], "--mw: expected LO:HI, got 'abc'"),
    (["--contains", "C(("], "SMARTS"),
    (["--format", "xyz"], "--format"),
    (["--out", "/nonexistent-folder/m.sdf"], "--out /nonexistent-folder/m.sdf: folder /nonexistent-folder does not"),
    (["--image", "."], "--image .: is a folder"),
    (["--out", "/proc/m.smi"], "--out /proc/m.smi: folder /proc is not writable"),  # root may: found after the work
    (["--image", "grid.xyz"], "--image grid.xyz: cannot write .xyz"),
    (["--out", "g.svg", "--format", "sdf", "--image", "./g.svg"], "--out and --image both name g.svg"),
    (["--heavy-atoms", "30:20"], "--heavy-atoms: lower bound 30 is above upper bound 20"),
    (["--max-ring-size", "2"], "--max-ring-size must be 0 (rings of any size) or at least 3"),
    (["--avoid", "PAINS,nasty"], "--avoid: unknown catalog 'nasty'; the structural-alert catalogs are"),
    (["--device", "gpu"], "--device gpu: expected cpu, cuda or cuda:N"),
    (["--checkpoint", str(default_checkpoint("sudoku"))], "not a molecules checkpoint"),
])
def test_cli_rejects_bad_requests_with_exit_2(args, message):
    result = CliRunner().invoke(app, ["molecules", "-n", "1", *args])
    assert result.exit_code == 2 and message in result.stderr and not result.stdout


def test_properties_are_finite_numbers(designer):
    m = designer.generate(1, seed=5)[0]
    assert set(m.properties) == set(PROPERTIES)
    assert all(math.isfinite(v) for v in m.properties.values())


def test_layouts_around_small_fragments_leave_room_for_molecules_of_the_usual_size(designer):
    """MOSES SMILES are 28-42 tokens (5-95 %): layouts around an amide must reach that far, so an amide with
    MW 250-330 is found (with free stretches of at most 6 tokens, none was in 1,024 canvases)."""
    _, values = task.fragment_layouts("C(=O)N", 400, torch.Generator().manual_seed(0))
    lengths = (values == task.EOS).float().argmax(1)
    assert lengths.float().mean() >= 22 and (lengths >= 28).float().mean() >= 0.3
    request = MoleculeRequest.parse({"mw": (250, 330)}, contains="C(=O)N")
    result = designer.design(2, request, seed=0, budget=256)
    assert len(result) == 2
    for m in result:
        check(m, request)


def test_model_only_molecules_are_verified_and_in_their_window():
    """guided=False: the model's own sampler, no masks or re-noising; only the final RDKit check filters."""
    designer = MoleculeDesigner.from_pretrained(guided=False)
    result = designer.generate(5, logp=(1, 3), seed=0)
    assert len(result) == 5 and not result.exhausted and result.canvases >= 5
    for molecule in result:
        mol = Chem.MolFromSmiles(molecule.smiles)
        assert mol is not None and molecule.verified
        assert 1 <= Crippen.MolLogP(mol) <= 3


def test_model_only_samples_with_the_checkpoints_settings_and_guidance_with_its_own(designer):
    """The shipped generation_config.json is what `solve train molecules` writes (tasks.molecules.SAMPLER);
    guided=False follows whatever the checkpoint says, the guided designer keeps its cooler 96-pass schedule."""
    from dataclasses import replace

    from diffsolve.solvers.molecules import GUIDED_PASSES

    model = designer.model
    shipped = model.generation_config
    assert {k: getattr(shipped, k) for k in task.SAMPLER} == task.SAMPLER
    model.generation_config = replace(shipped, max_denoising_steps=33, t_max=0.9)
    try:
        alone, guided = MoleculeDesigner(model, guided=False).config, MoleculeDesigner(model).config
    finally:
        model.generation_config = shipped
    assert (alone.max_denoising_steps, alone.t_max, alone.keep_accepted) == (33, 0.9, False)
    assert (guided.max_denoising_steps, guided.t_max, guided.keep_accepted) == (GUIDED_PASSES, 0.5, True)
    assert MoleculeDesigner(model, max_steps=7).config.max_denoising_steps == 7


# ------------------------------------------------------------------------------------------ known molecules
def test_known_molecule_filter_holds_its_members_and_few_others(tmp_path):
    from diffsolve.tasks.molecule_known import KnownMolecules

    members = [f"C{'C' * k}O" for k in range(2000)]
    others = [f"N{'C' * k}N" for k in range(20000)]
    known = KnownMolecules.build(members, false_positives=0.01)
    assert all(known.contains(members))
    assert sum(known.contains(others)) / len(others) < 0.02
    known.save(tmp_path / "f.safetensors", {"molecules": "2000"})
    again = KnownMolecules.load(tmp_path / "f.safetensors")
    assert again.contains(members + others) == known.contains(members + others)


def test_shipped_filter_knows_moses_training_molecules():
    from diffsolve.tasks.molecule_known import FILTER, training_molecules
    from safetensors import safe_open

    with safe_open(str(FILTER), framework="pt") as f:
        assert int(f.metadata()["molecules"]) > 1_500_000
    train = ["CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1", "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
             "Cc1c(Cl)cccc1Nc1ncccc1C(=O)OCC(O)CO"]
    assert training_molecules().contains([Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in train]) == [True] * 3
    assert training_molecules().contains([Chem.MolToSmiles(Chem.MolFromSmiles(ASPIRIN))]) == [False]  # 180 Da


def test_windows_beyond_every_training_molecule_are_warned_about(designer):
    from diffsolve.tasks.molecule_data import TRAINING_RANGES, training_ranges

    train = ["CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1", "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
             "Cc1c(Cl)cccc1Nc1ncccc1C(=O)OCC(O)CO"]
    for name, (lo, hi) in training_ranges(train).items():
        assert TRAINING_RANGES[name][0] <= lo <= hi <= TRAINING_RANGES[name][1]
    assert training_ranges(["CCO", "c1ccccc1"])["heavy_atoms"] == (3, 6)
    assert not MoleculeRequest.parse({"mw": (300, 310), "logp": (5, 6.5)}).unlikely()
    big = "CC(C)N1CCC(NC(=O)C2CCN(C(=O)C3CCCC3)CC2)CC1"  # 0 of 28 decorations held a benzene, none in 384 canvases
    (message,) = MoleculeRequest.parse(contains="c1ccccc1", scaffold=big).unlikely()
    assert message.startswith("contains: beside a scaffold 'c1ccccc1' is only matched") and "least 49 tokens" in message
    assert not MoleculeRequest.parse(contains="C(=O)N", scaffold=big).unlikely()  # the scaffold holds it
    assert not MoleculeRequest.parse(contains="Cl", scaffold="c1ccccc1").unlikely()  # room to spare
    (message,) = MoleculeRequest.parse({"mw": (900, 1000)}).unlikely()
    assert message.startswith("mw: window 900:1000 lies outside the training molecules' range")
    (message,) = MoleculeRequest.parse({"qed": (0.95, 1)}).unlikely()  # was silent: it meets the top QED only
    assert message.startswith("qed: window 0.95: only touches the edge of the training molecules' range 0.23:0.95")
    (message,) = MoleculeRequest.parse({"mw": (300, 300)}).unlikely()
    assert message.startswith("mw: window 300:300 has no width")
    assert not MoleculeRequest.parse({"hbd": (7, 7), "rings": (2, 2)}).unlikely()  # counts are hit exactly
    assert not MoleculeRequest.parse({"tpsa": (None, 0)}).unlikely()  # no N or O: a TPSA of exactly 0
    with pytest.warns(UnlikelyRequestWarning, match="mw: window 900:1000") as caught:
        result = designer.generate(1, mw=(900, 1000), budget=1, seed=0)
    assert result.exhausted
    assert caught[0].filename == __file__  # the caller's line, not a line inside torch or diffsolve
    with pytest.warns(UnlikelyRequestWarning) as caught:
        designer.design(1, MoleculeRequest.parse({"mw": (900, 1000)}), budget=1, seed=0)
    assert caught[0].filename == __file__
    cli = CliRunner().invoke(app, ["molecules", "-n", "1", "--mw", "900:1000", "--budget", "1"])
    assert cli.exit_code == 1 and "warning: --mw: window 900:1000 lies outside" in cli.stderr
    assert "UnlikelyRequestWarning" not in cli.stderr  # said once, in the CLI's words


# ------------------------------------------------------------------------------------------ acceptance
def test_acceptance_keeps_training_like_molecules_more_often(tmp_path):
    from diffsolve.tasks.molecule_acceptance import Acceptance

    sevens = [Chem.MolFromSmiles(f"C1CCCCCC1{'C' * k}N") for k in range(40)]  # the "designer" overdoes 7-rings
    sixes = [Chem.MolFromSmiles(f"c1ccccc1{'C' * k}N") for k in range(40)]
    designed, training = sevens + sixes[:10], sixes + sevens[:10]
    acceptance = Acceptance.fit(designed, training, quantile=0.9)
    assert acceptance.ratio(sixes).mean() > 2 * acceptance.ratio(sevens).mean()
    kept = acceptance.accept(sevens + sixes, torch.Generator().manual_seed(0))
    assert kept[40:].sum() > kept[:40].sum()
    acceptance.save(tmp_path / "a.safetensors", {"quantile": "0.9"})
    again = Acceptance.load(tmp_path / "a.safetensors")
    assert torch.allclose(again.ratio(designed), acceptance.ratio(designed)) and again.cap == acceptance.cap
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes((tmp_path / "a.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged.safetensors: not a readable acceptance file"):
        Acceptance.load(damaged)


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.update(weight=t["weight"][:3]), r"weight \(3,\) \(expected \(\d+,\)\)"),
    (lambda t: t.update(cap=torch.ones(2, dtype=torch.float64)), r"cap \(2,\) \(expected \(\)\)"),
    (lambda t: t.update(mean=t["mean"][:, None].repeat(1, 2)), r"mean \(\d+, 2\)"),
    (lambda t: t.update(cap=torch.tensor(float("nan"), dtype=torch.float64)), r"cap holds inf or NaN"),
    (lambda t: t.update(scale=-t["scale"]), r"scale must be positive"),
    (lambda t: t.update(mean=t["mean"].long()), r"mean has dtype torch.int64, expected floating point"),
])
def test_an_acceptance_file_of_the_wrong_make_is_refused_when_loaded(tmp_path, edit, problem):
    """Not 35 s into a design with a size mismatch, nor (a NaN cap) every molecule silently left out."""
    from safetensors.torch import load_file, save_file

    from diffsolve.tasks.molecule_acceptance import FILE, Acceptance

    tensors = load_file(Path(default_checkpoint("molecules")) / FILE)
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / FILE)
    with pytest.raises(CheckpointError, match=rf"{FILE}: not a usable acceptance: {problem}"):
        Acceptance.load(tmp_path / FILE)


def test_free_generation_leaves_out_training_molecules_and_atypical_ones(designer):
    from diffsolve.tasks.molecule_known import training_molecules

    assert designer.acceptance is not None and designer.known is not None  # the shipped checkpoint has both
    result = designer.generate(24, seed=5)
    assert len(result) == 24 and result.atypical > 0
    assert not any(training_molecules().contains([m.smiles for m in result]))
    plain = MoleculeDesigner(designer.model, match_training=False, novel=False, canvases_per_round=64)
    assert plain.acceptance is None and plain.known is None
    unfiltered = plain.generate(24, seed=5)
    assert unfiltered.known == unfiltered.atypical == 0
    assert {m.smiles for m in unfiltered} != {m.smiles for m in result}
    windowed = designer.generate(4, logp=(1.0, 3.0), seed=5)
    assert windowed.atypical == 0  # the acceptance is for free generation only


def test_an_acceptance_fitted_to_other_weights_is_not_used(designer, tmp_path):
    import shutil

    from diffsolve.core import load_model, weights_digest

    shipped = Path(designer.model.source)
    assert designer.acceptance is not None  # the shipped file names the shipped weights: it is used
    copy = tmp_path / "model"
    shutil.copytree(shipped, copy)
    retrained = load_model(copy)
    with torch.no_grad():
        next(retrained.parameters()).mul_(1.01)  # other weights, saved where the old acceptance still lies
    retrained.save_pretrained(copy)
    assert weights_digest(copy) != weights_digest(shipped)
    with pytest.warns(UserWarning, match="was fitted to other weights"):
        stale = MoleculeDesigner(load_model(copy))
    assert stale.acceptance is None


def test_a_drawn_seed_is_reported_and_repeats_the_run(designer):
    rounds = []
    first = designer.generate(2, logp=(2, 3), on_round=lambda tried, found: rounds.append((tried, found)))
    assert isinstance(first.seed, int) and rounds and rounds[-1] == (first.canvases, len(first))
    again = designer.generate(2, logp=(2, 3), seed=first.seed)
    assert [m.smiles for m in again] == [m.smiles for m in first] and again.canvases == first.canvases


def test_an_interrupt_hands_over_what_was_found(designer):
    def stop_at_the_third(molecule):
        kept.append(molecule)
        if len(kept) == 3:
            raise KeyboardInterrupt

    kept = []
    with pytest.raises(DesignInterrupted) as stop:
        designer.generate(10, seed=3, on_molecule=stop_at_the_third)
    result = stop.value.result
    assert isinstance(stop.value, KeyboardInterrupt)
    assert [m.smiles for m in result] == [m.smiles for m in kept] and result.requested == 10
    assert result.seed == 3 and result.canvases >= 32 and result.known + result.atypical > 0 and not result.exhausted
    assert "stopped with 3/10 molecules" in str(stop.value)


def test_an_interrupt_inside_a_round_keeps_the_canvases_that_had_stopped(designer):
    """A round takes minutes on a CPU; a second Ctrl-C (or one inside a round) lost all of it."""
    def stop_at_pass_12(step: int) -> None:
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(DesignInterrupted) as stop:
        designer.generate(10, logp=(1, 4), seed=1, on_pass=stop_at_pass_12)  # a round of 80 canvases
    result = stop.value.result
    assert 0 < len(result) < 10 and len(result) <= result.canvases < 80  # the canvases that had stopped
    assert all(1 <= Crippen.MolLogP(m.mol) <= 4 and m.verified for m in result)


def test_cli_ctrl_c_writes_the_molecules_found_so_far(tmp_path):
    # MW 400-450 lies beyond the training data (at most 350 Da): at seed 0 the first molecule comes in the first
    # round of 32 canvases and the third in the tenth, so Ctrl-C at the first leaves the request unfinished.
    # The first Ctrl-C lets the round under way finish: its molecules are written too.
    out = tmp_path / "found.smi"
    status, _, err = ctrl_c_when(["molecules", "-n", "4", "--mw", "400:450", "--seed", "0", "--out", str(out)],
                                 ready=r"\s[1-3]/4\s")
    assert status == 130, err
    assert "finishing the round of canvases under way; Ctrl-C again stops at once" in err
    said = re.search(r"interrupted: (\d)/4 verified molecules from (\d+) canvases in [\d.]+ s; written to ", err)
    assert said, err[-500:]
    found = out.read_text().split()
    assert len(found) == int(said[1]) in (1, 2, 3) and int(said[2]) >= 64 and int(said[2]) % 32 == 0
    assert all(400 <= Descriptors.MolWt(Chem.MolFromSmiles(s)) <= 450 for s in found)


def test_cli_sigterm_stops_after_the_pass_under_way_and_writes_what_earlier_rounds_found(tmp_path):
    # As a scheduler ends a job: no second signal comes, and the kill follows within seconds, so the round under
    # way (tens of seconds on a CPU) is cut short, keeping its canvases that had stopped; the molecules of the
    # rounds before it are written.
    out = tmp_path / "found.smi"
    status, _, err = ctrl_c_when(["molecules", "-n", "4", "--mw", "400:450", "--seed", "0", "--out", str(out)],
                                 ready=r"\s[1-3]/4\s.*\s[1-9]\d*/\d+ canvases done, the round under way at pass 2/",
                                 sent=signal.SIGTERM)
    assert status == 130, err
    assert "terminated: stopping after this pass, with the round's stopped canvases" in err
    said = re.search(r"interrupted: (\d)/4 verified molecules from (\d+) canvases in [\d.]+ s; written to ", err)
    assert said, err[-500:]
    assert len(out.read_text().split()) == int(said[1]) in (1, 2, 3) and int(said[2]) >= 32
    passes = [int(k) for k in re.findall(r"the round under way at pass (\d+)/", err)]
    assert passes[-1] <= 4, passes  # it stopped a pass or two after the signal, not at the end of the round


def test_a_smarts_that_is_no_smiles_prints_no_rdkit_parse_error(capfd):
    request = MoleculeRequest.parse(contains="[CX3](=O)[OX2H1]")
    assert request.fragment is None and request.unlikely() == []
    assert "Parse Error" not in capfd.readouterr().err  # the CLI showed five lines of it for a valid pattern


@pytest.mark.parametrize("scaffold, molecule, decorated", [
    ("c1ccncc1", "Cn1ccccc1=O", False),  # N-methyl-2-pyridone: a lactam; pyridine's N has no hydrogen
    ("c1ccc2ncncc2c1", "CCn1cnc2ccccc2c1=O", False),  # a quinazolinone
    ("c1cncnc1", "Cn1c(=O)cc(C)n(C)c1=O", False),  # dimethyluracil
    ("c1ccc2[nH]cnc2c1", "Cn1c(=O)n(C)c2ccccc21", False),  # a benzimidazolone: the second n had no hydrogen
    ("c1ccncc1", "Cc1ccncc1", True),
    ("c1ccncc1", "O=c1cccc[nH]1", True),  # 2-pyridone adds an atom only where pyridine had a hydrogen
    ("c1ccc2[nH]cnc2c1", "Cn1cnc2ccccc21", True),  # the [nH]'s hydrogen replaced
    ("C1CCNCC1", "CN1CCCCC1", True),
])
def test_a_scaffold_is_decorated_only_where_it_had_a_hydrogen(scaffold, molecule, decorated):
    """A chemist's probe: the verifier took lactams for decorated azines."""
    request = MoleculeRequest.parse(scaffold=scaffold)
    assert (request.misses(Chem.MolFromSmiles(molecule)) == []) is decorated
    assert decorates(Chem.MolFromSmiles(molecule), Chem.MolFromSmiles(scaffold)) is decorated


def test_the_substructures_handed_out_are_copies_that_leave_verification_alone():
    """`substructures()` (for highlighting) handed out the cached query molecules the verifier matches with: a
    caller's edit of one changed what later requests with that scaffold verify."""
    for query in MoleculeRequest.parse(scaffold="c1ccccc1").substructures():
        query.GetAtomWithIdx(0).SetAtomicNum(7)  # a caller's own use of the molecule
    assert MoleculeRequest.parse(scaffold="c1ccccc1").misses(Chem.MolFromSmiles("Cc1ccccc1")) == []
