"""Raw samples of molecule checkpoints, judged against MOSES *training* molecules (never the test set): for
comparing checkpoints during development, and for seeing why raw samples fail.

    python benchmarks/molecule_raw.py [--checkpoints models/molecules,runs/x/model] [--samples 2000]

Per checkpoint: `--samples` unconditioned canvases from the stock sampler (the checkpoint's own
generation_config.json, as in benchmarks/molecules.py's model-only column, same seed for every checkpoint);
validity, uniqueness of the valid, FCD against 10,000 training molecules, heavy atoms per valid molecule,
SMILES tokens per sample against the training molecules, and what the invalid samples fail on (unbalanced
parentheses, other parse failures such as ring digits, aromatic rings RDKit cannot kekulize, other chemistry).
Writes JSON and a markdown table (default benchmarks/results/molecule_raw.*).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from molecules import CACHE, stock_samples, train_sample
from rdkit import Chem, RDLogger
from reporting import ROOT, write_results

from diffsolve.core import load_model
from diffsolve.tasks import molecule_metrics as mm
from diffsolve.tasks.molecule_data import split_smiles

FAILURES = ("parentheses", "parse", "kekulize", "chemistry")


def failure(smiles: str) -> str | None:
    """Why a sample is not a molecule (None when it is)."""
    if smiles and Chem.MolFromSmiles(smiles) is not None:
        return None
    if smiles.count("(") != smiles.count(")"):
        return "parentheses"
    mol = Chem.MolFromSmiles(smiles, sanitize=False) if smiles else None
    if mol is None:
        return "parse"
    problems = Chem.DetectChemistryProblems(mol)
    return "kekulize" if problems and problems[0].GetType() == "KekulizeException" else "chemistry"


def training_reference() -> dict:
    path = CACHE / "train10k_chemnet.npz"
    sample = train_sample(10_000, 40)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **mm.chemnet_stats(sample))
    with np.load(path) as stats:
        chemnet = {k: stats[k] for k in stats.files}
    return {"chemnet": chemnet, "tokens": float(np.mean([len(split_smiles(s)) for s in sample]))}


def evaluate(checkpoint: str, samples: int, seed: int, ref: dict) -> dict:
    smiles, seconds = stock_samples(load_model(checkpoint), samples, seed)
    valid = [c for c in map(mm.canonical, smiles) if c]
    reasons = Counter(r for r in map(failure, smiles) if r)
    invalid = max(1, sum(reasons.values()))
    return {"checkpoint": checkpoint, "samples": samples, "valid": len(valid) / samples,
            "unique": len(set(valid)) / max(1, len(valid)),
            "fcd_train": mm.frechet_distance(mm.chemnet_stats(valid), ref["chemnet"]),
            "heavy_atoms": float(np.mean([Chem.MolFromSmiles(c).GetNumHeavyAtoms() for c in valid])),
            "tokens": float(np.mean([len(split_smiles(s)) for s in smiles if s])), "train_tokens": ref["tokens"],
            "failures": {k: reasons[k] / invalid for k in FAILURES}, "seconds": seconds}


def markdown(rows: list[dict]) -> str:
    lines = ["| checkpoint | valid | unique | FCD vs train | heavy atoms | tokens (train) | "
             + " | ".join(f"{k} % of invalid" for k in FAILURES) + " | s |", "|---" * (7 + len(FAILURES)) + "|"]
    for r in rows:
        lines.append(f"| {r['checkpoint']} | {r['valid']:.3f} | {r['unique']:.3f} | {r['fcd_train']:.1f} | "
                     f"{r['heavy_atoms']:.1f} | {r['tokens']:.1f} ({r['train_tokens']:.1f}) | "
                     + " | ".join(f"{100 * r['failures'][k]:.0f}" for k in FAILURES) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="models/molecules")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=123_456)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "molecule_raw.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RDLogger.DisableLog("rdApp.*")
    ref = training_reference()
    rows = []
    for checkpoint in args.checkpoints.split(","):
        rows.append(evaluate(checkpoint, args.samples, args.seed, ref))
        print(f"  {checkpoint}: valid {rows[-1]['valid']:.3f}", file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    write_results(args.out, {"rows": rows}, table)


if __name__ == "__main__":
    main()
