"""Molecule data: SMILES tokens, the properties users ask for, and the MOSES training set.

MOSES ships in the `molsets==0.3.1` wheel (`moses/dataset/data/*.csv.gz`). The `moses` package itself does
not import on current RDKit, so the files are located through the installed distribution's metadata and
read directly; install it with `pip install --no-deps molsets==0.3.1` (as `make moses` does).
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, Lipinski, rdMolDescriptors
from rdkit.Chem.Scaffolds import MurckoScaffold

from ..core import quiet_worker


_QUIET_LOCK = threading.Lock()
_quiet_calls = 0  # quiet calls running now, in any thread
_quiet_block: rdBase.BlockLogs | None = None  # RDKit's log comes back when this is dropped


def rdkit_quiet(function):
    """`function` with RDKit's log blocked while it runs (callbacks it makes included): invalid candidates are
    expected, and we report problems ourselves. Only for the call, so a caller's own RDKit messages still show.
    RDKit's log is one for the whole process: the block lasts until the last quiet call of any thread ends (one
    thread's call ending first must not let another's rejected candidates through)."""
    @functools.wraps(function)
    def quiet(*args, **kwargs):
        global _quiet_calls, _quiet_block
        with _QUIET_LOCK:
            if _quiet_calls == 0:
                _quiet_block = rdBase.BlockLogs()
            _quiet_calls += 1
        try:
            return function(*args, **kwargs)
        finally:
            with _QUIET_LOCK:
                _quiet_calls -= 1
                if _quiet_calls == 0:
                    _quiet_block = None
    return quiet


def quiet_molecule_worker() -> None:
    """Pool initializer of our molecule workers: quiet on Ctrl-C (quiet_worker) and on RDKit's log (a process of
    our own, so for good)."""
    quiet_worker()
    RDLogger.DisableLog("rdApp.*")


# Atom-level SMILES tokens: bracket atoms, two-letter halogens, then single characters.
TOKEN_PATTERN = re.compile(r"\[[^\]]+]|Br|Cl|%\d{2}|[BCNOPSFIbcnops]|[()=#\-+\\/:~@?>*$.]|\d")
# Every token of the MOSES training set (atom-level, as found by TOKEN_PATTERN), most frequent first.
SMILES_TOKENS = ("c", "C", "(", ")", "1", "O", "2", "N", "=", "n", "3", "F", "-", "S", "s", "o", "Cl", "[nH]",
                 "#", "4", "Br", "5", "[H]", "6")
MAX_SMILES_TOKENS = 62  # canvas 64 = tokens + EOS, with room to spare (MOSES max is 54)


class SmilesError(ValueError):
    """A SMILES string the model cannot represent or RDKit cannot read."""


def split_smiles(smiles: str) -> list[str]:
    """Atom-level tokens; raises SmilesError if characters are left over."""
    tokens = TOKEN_PATTERN.findall(smiles)
    if "".join(tokens) != smiles:
        raise SmilesError(f"cannot tokenize SMILES {smiles!r}")
    return tokens


def tokenize_known(smiles: str) -> list[str]:
    """Tokens of `smiles`, all of which must be in the model's vocabulary."""
    tokens = split_smiles(smiles)
    unknown = sorted(set(tokens).difference(SMILES_TOKENS))
    if unknown:
        raise SmilesError(f"{smiles!r} uses token(s) {', '.join(unknown)} that the model's vocabulary lacks "
                          f"(it knows {' '.join(SMILES_TOKENS)})")
    if len(tokens) > MAX_SMILES_TOKENS:
        raise SmilesError(f"{smiles!r} has {len(tokens)} tokens; the canvas holds {MAX_SMILES_TOKENS}")
    return tokens


# ------------------------------------------------------------------------------------------ properties
@dataclass(frozen=True)
class Property:
    name: str
    description: str
    compute: Callable[[Chem.Mol], float]
    integer: bool = False


PROPERTIES = {p.name: p for p in (
    Property("logp", "Crippen logP", Crippen.MolLogP),
    Property("mw", "molecular weight (Da)", Descriptors.MolWt),
    Property("qed", "quantitative estimate of drug-likeness (0-1)", QED.qed),
    Property("tpsa", "topological polar surface area", rdMolDescriptors.CalcTPSA),
    Property("hbd", "hydrogen-bond donors", Lipinski.NumHDonors, integer=True),
    Property("hba", "hydrogen-bond acceptors", Lipinski.NumHAcceptors, integer=True),
    Property("rings", "ring count", rdMolDescriptors.CalcNumRings, integer=True),
    Property("heavy_atoms", "heavy atom count", Lipinski.HeavyAtomCount, integer=True),
)}


def exact_properties(mol: Chem.Mol, names: Sequence[str] = tuple(PROPERTIES)) -> dict[str, float]:
    """RDKit's values, unrounded: what windows are checked against."""
    return {name: PROPERTIES[name].compute(mol) for name in names}


def compute_properties(mol: Chem.Mol, names: Sequence[str] = tuple(PROPERTIES)) -> dict[str, float]:
    """The values for display: integers for counts, 4 decimals otherwise."""
    return {name: int(value) if PROPERTIES[name].integer else round(float(value), 4)
            for name, value in exact_properties(mol, names).items()}


def scaffold_smiles(mol: Chem.Mol) -> str:
    """Bemis-Murcko scaffold as canonical SMILES ('' for acyclic molecules)."""
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol))


# Properties the model is conditioned on, with the bin edges of their prompt tokens (chosen to cover the
# MOSES distribution: logP about 2.5 +- 1, MW 250-350 Da, TPSA 20-120).
CONDITION_BINS: dict[str, tuple[float, ...]] = {
    "logp": (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0),
    "mw": (260.0, 280.0, 300.0, 320.0, 340.0),
    "tpsa": (30.0, 45.0, 60.0, 75.0, 90.0, 105.0),
}


def bin_index(name: str, values: float | np.ndarray) -> np.ndarray:
    """The bin k of each value of property `name`: CONDITION_BINS edge k - 1 <= value < edge k."""
    return np.searchsorted(np.array(CONDITION_BINS[name]), values, side="right")


def bin_ranges(name: str) -> list[tuple[float, float]]:
    edges = (-math.inf, *CONDITION_BINS[name], math.inf)
    return list(itertools.pairwise(edges))


def condition_tokens() -> list[str]:
    """Prompt tokens: `<logp=k>` for bin k of each conditioned property, `<logp=?>` when unspecified."""
    tokens = []
    for name in CONDITION_BINS:
        tokens += [f"<{name}={k}>" for k in range(len(bin_ranges(name)))] + [f"<{name}=?>"]
    return tokens + ["<scaffold>"]


# ------------------------------------------------------------------------------------------ MOSES
def moses_file(split: str) -> Path:
    """Path of a MOSES split (`train`, `test`, `test_scaffolds`) inside the installed molsets wheel."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("molsets")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the MOSES data needs the molsets wheel: pip install --no-deps molsets==0.3.1") \
            from None
    path = Path(str(dist.locate_file(f"moses/dataset/data/{split}.csv.gz")))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MOSES split {split!r} not found in the molsets wheel")
    return path


def read_moses(split: str) -> list[str]:
    with gzip.open(moses_file(split), "rt") as f:
        header = f.readline().strip().split(",")
        column = header.index("SMILES")
        return [line.rstrip("\n").split(",")[column] for line in f if line.strip()]


def training_ranges(smiles: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(smallest, largest) value of each property over the molecules RDKit reads among `smiles`."""
    values = [exact_properties(mol) for mol in map(Chem.MolFromSmiles, smiles) if mol is not None]
    return {name: (min(v[name] for v in values), max(v[name] for v in values)) for name in PROPERTIES}


# training_ranges(read_moses("train")[::20]), rounded outward: what the model has seen. A window beyond these
# asks for molecules it has never written (verified ones may be rare or absent within a budget).
TRAINING_RANGES = {"logp": (-4.0, 5.1), "mw": (250.0, 350.0), "qed": (0.23, 0.95), "tpsa": (0.0, 187.0),
                   "hbd": (0, 7), "hba": (0, 12), "rings": (0, 6), "heavy_atoms": (8, 26)}  # 79,234 molecules, 102 s


def prompt_sample(smiles: Sequence[str], n: int, seed: int = 0, workers: int = 2) -> list[list]:
    """Rows [logp bin, mw bin, tpsa bin, SMILES tokens, scaffold SMILES] of `n` molecules drawn at random
    (seeded) from `smiles` among those `featurize` keeps and whose scaffold fits the prompt: the training
    molecules whose prompts free generation reuses."""
    from .molecule_canvas import MAX_SCAFFOLD_TOKENS, TOKENIZER

    order = np.random.default_rng(seed).permutation(len(smiles))
    rows: list[list] = []
    chunk = n + n // 10 + 100  # featurize drops about 1 in 1,000; rows are taken in `order` whatever the chunk
    for start in range(0, len(order), chunk):
        data = featurize([smiles[i] for i in order[start:start + chunk]], workers)
        bins = [bin_index(name, data[name]) for name in CONDITION_BINS]
        lengths = (data["molecules"] != 0).sum(1)  # 0 is the padding id (see `featurize`)
        for k, scaffold in enumerate(data["scaffolds"]):
            ids = scaffold[scaffold != 0]
            if len(ids) <= MAX_SCAFFOLD_TOKENS:
                rows.append([*(int(b[k]) for b in bins), int(lengths[k]),
                             "".join(TOKENIZER.id_to_token(int(i)) for i in ids)])
        if len(rows) >= n:
            break
    return rows[:n]


def write_prompt_sample(path: Path, n: int = 100_000, seed: int = 0, workers: int = 2) -> None:
    """`prompt_sample` of the MOSES training set as gzipped JSON (byte for byte the same for the same
    arguments), the table `molecules.training_draws` reads."""
    table = {"description": f"{n:,} MOSES training molecules (molsets 0.3.1 train.csv.gz) drawn at random, seed "
                            f"{seed}: the prompt bins, SMILES length and Bemis-Murcko scaffold of each",
             "columns": ["logp_bin", "mw_bin", "tpsa_bin", "tokens", "scaffold"],
             "command": f"python -c \"from diffsolve.tasks.molecule_data import write_prompt_sample; "
                        f"write_prompt_sample('tasks/{Path(path).name}', n={n}, seed={seed})\"",
             "rows": prompt_sample(read_moses("train"), n, seed, workers)}
    text = json.dumps(table, separators=(",", ":")).replace('],[', '],\n[')
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text.encode())


def _features(smiles: str) -> tuple[str, float, float, float, str] | None:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return (smiles, Crippen.MolLogP(mol), Descriptors.MolWt(mol), rdMolDescriptors.CalcTPSA(mol),
            scaffold_smiles(mol))


def featurize(smiles: Sequence[str], workers: int = 2) -> dict[str, np.ndarray]:
    """Token ids of each molecule and its scaffold, and the conditioned properties, for training. Molecules
    whose SMILES or scaffold the vocabulary cannot represent are left out."""
    from multiprocessing import Pool

    from tqdm.auto import tqdm

    from .molecule_canvas import TOKENIZER, encode_tokens

    def ids(text: str) -> list[int] | None:
        try:
            return encode_tokens(tokenize_known(text)) if text else []
        except SmilesError:
            return None

    with Pool(workers, initializer=quiet_molecule_worker) as pool:
        rows = [r for r in tqdm(pool.imap(_features, smiles, chunksize=2000), total=len(smiles), desc="featurize",
                                mininterval=5.0) if r is not None]
    encoded = [(r, ids(r[0]), ids(r[4])) for r in rows]
    encoded = [e for e in encoded if e[1] is not None and e[2] is not None]
    rows = [r for r, _, _ in encoded]
    molecules = np.zeros((len(rows), MAX_SMILES_TOKENS), dtype=np.uint8)
    scaffolds = np.zeros((len(rows), MAX_SMILES_TOKENS), dtype=np.uint8)
    for i, (_, molecule, scaffold) in enumerate(encoded):
        molecules[i, :len(molecule)] = molecule
        scaffolds[i, :len(scaffold)] = scaffold
    assert TOKENIZER.token_to_id("<pad>") == 0  # zero padding above
    return {"molecules": molecules, "scaffolds": scaffolds,
            "logp": np.array([r[1] for r in rows], dtype=np.float32),
            "mw": np.array([r[2] for r in rows], dtype=np.float32),
            "tpsa": np.array([r[3] for r in rows], dtype=np.float32)}
