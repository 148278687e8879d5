"""Known molecules: a Bloom filter of the MOSES training set's canonical SMILES, shipped with the package, so
that the designer can leave out molecules it would only be recalling (1.58M molecules in 1.9 MB instead of the
60 MB list). A molecule not in the set is never reported as known; a novel one is taken for known with
probability FALSE_POSITIVES (it is then dropped like a training molecule, which costs a canvas, not a wrong
answer). Canonical SMILES are RDKit's; another RDKit version may canonicalize some molecules differently.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..core import write_atomically
from .molecule_data import quiet_molecule_worker, read_moses

FILTER = Path(__file__).parent / "moses_train_known.safetensors"
FALSE_POSITIVES = 0.01


def _positions(smiles: Iterable[str], bits: int, hashes: int) -> np.ndarray:
    """[n, hashes] bit positions of each string (double hashing of one 128-bit BLAKE2b digest)."""
    digests = np.frombuffer(b"".join(hashlib.blake2b(s.encode(), digest_size=16).digest() for s in smiles),
                            dtype="<u8").reshape(-1, 2)
    step = np.arange(hashes, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return ((digests[:, :1] + step * (digests[:, 1:] | np.uint64(1))) % np.uint64(bits)).astype(np.int64)


class KnownMolecules:
    def __init__(self, packed: np.ndarray, bits: int, hashes: int):
        self.packed, self.bits, self.hashes = packed, bits, hashes

    @classmethod
    def build(cls, smiles: Sequence[str], false_positives: float = FALSE_POSITIVES) -> "KnownMolecules":
        bits = math.ceil(-len(smiles) * math.log(false_positives) / math.log(2) ** 2)
        hashes = max(1, round(bits / len(smiles) * math.log(2)))
        flags = np.zeros(bits, dtype=bool)
        flags[_positions(smiles, bits, hashes).ravel()] = True
        return cls(np.packbits(flags), bits, hashes)

    def contains(self, smiles: Sequence[str]) -> list[bool]:
        """Whether each canonical SMILES is (probably) in the set."""
        if not smiles:
            return []
        at = _positions(smiles, self.bits, self.hashes)
        flags = (self.packed[at >> 3] >> (7 - (at & 7))) & 1
        return flags.all(axis=1).tolist()

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        write_atomically(Path(path), lambda tmp: save_file(
            {"packed": torch.from_numpy(self.packed.copy())}, str(tmp),
            metadata={**metadata, "bits": str(self.bits), "hashes": str(self.hashes)}))

    @classmethod
    def load(cls, path: Path = FILTER) -> "KnownMolecules":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            return cls(f.get_tensor("packed").numpy(), int(meta["bits"]), int(meta["hashes"]))


@lru_cache(maxsize=1)
def training_molecules() -> KnownMolecules:
    """The shipped filter of the MOSES training set (loaded once per process)."""
    return KnownMolecules.load(FILTER)


def write_training_filter(path: Path = FILTER, workers: int = 2) -> None:
    """Build the shipped filter from the MOSES training set in the molsets wheel (the same bits and metadata every
    time for the same RDKit; safetensors may write the header's keys in another order)."""
    from multiprocessing import Pool

    from .molecule_metrics import canonical

    with Pool(workers, initializer=quiet_molecule_worker) as pool:
        smiles = sorted({c for c in pool.map(canonical, read_moses("train"), chunksize=4096) if c})
    known = KnownMolecules.build(smiles)
    from rdkit import rdBase

    known.save(Path(path), {"molecules": str(len(smiles)), "false_positives": str(FALSE_POSITIVES),
                            "source": "MOSES train.csv.gz (molsets 0.3.1), RDKit canonical SMILES",
                            "rdkit": rdBase.rdkitVersion,
                            "command": "python -c \"from diffsolve.tasks.molecule_known import write_training_filter; "
                                       "write_training_filter()\""})
