"""Scaffold decoration, measured with GenMol's metrics (Lee et al. 2025, fragment-constrained generation).

    python benchmarks/scaffold_decoration.py [--scaffolds 4] [--canvases 128] [--checkpoint DIR]

For each of `--scaffolds` Bemis-Murcko scaffolds of MOSES's scaffold test set (the same ones, at the same seed,
as the constrained part of benchmarks/molecules.py), `MoleculeDesigner.generate(scaffold=...)` on exactly
`--canvases` canvases (as many molecules asked for as canvases, and that budget): once as asked, and once also
asking for QED >= 0.6 (half of GenMol's quality bar; there is no synthetic-accessibility window to ask for).
Per request and in all:
- returned / canvases: distinct verified molecules per canvas, GenMol's validity x uniqueness per sample (here
  every returned molecule is valid and contains the scaffold; a canvas that yields none, or a repeat, counts
  against it);
- quality: unique molecules with QED >= 0.6 and SA <= 4 (RDKit's contributed sascorer, which reads the fragment
  scores RDKit ships in its own wheel) per molecule returned, and per canvas tried (GenMol divides by its samples);
- diversity: 1 - the mean pairwise Tanimoto similarity of the returned molecules (Morgan radius 2, 1024 bits).
The designer runs as shipped, so its novelty filter leaves out MOSES training molecules: they count against the
per-canvas numbers, which GenMol's do not hold against it.
GenMol's scaffold decoration (its paper, Table 2): validity 96.6 %, quality 31.8 %.
Writes JSON and a markdown table (benchmarks/results/scaffold_decoration.*).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from rdkit import Chem, RDLogger
from rdkit.Chem import QED
from rdkit.Contrib.SA_Score import sascorer

from diffsolve.core import weights_digest
from diffsolve.solvers import MoleculeDesigner
from diffsolve.tasks import molecule_metrics as mm
from molecules import test_scaffolds
from reporting import THREADS_HELP, add_out_argument, count, relative, write_results

GENMOL = {"validity": 0.966, "quality": 0.318}
QUALITY_QED, QUALITY_SA = 0.6, 4.0


def is_quality(mol: Chem.Mol) -> bool:
    """GenMol's quality bar: drug-like (QED >= 0.6) and synthesizable (SA <= 4)."""
    return QED.qed(mol) >= QUALITY_QED and sascorer.calculateScore(mol) <= QUALITY_SA


def diversity(mols: list[Chem.Mol]) -> float | None:
    """1 - the mean Tanimoto similarity over distinct pairs (a molecule with itself left out)."""
    n = len(mols)
    if n < 2:
        return None
    fps = mm.fingerprints(mols)
    return round(1 - (float(mm.tanimoto(fps, fps).sum()) - n) / (n * (n - 1)), 4)


def decorate(designer: MoleculeDesigner, scaffold: str, canvases: int, seed: int, qed: tuple | None) -> dict:
    began = time.perf_counter()
    result = designer.generate(canvases, scaffold=scaffold, qed=qed, seed=seed, budget=canvases)
    mols = [m.mol for m in result]
    quality = sum(map(is_quality, mols))  # the molecules are distinct by construction
    return {"scaffold": scaffold, "qed_asked": qed is not None, "returned": len(mols),
            "canvases": result.canvases, "quality": quality,
            "diversity": diversity(mols),
            "seconds": round(time.perf_counter() - began, 1),
            "smiles": [m.smiles for m in result]}


def summary(rows: list[dict]) -> dict:
    returned, canvases, quality = (sum(r[k] for r in rows) for k in ("returned", "canvases", "quality"))
    diversities = [r["diversity"] for r in rows if r["diversity"] is not None]
    return {"returned": returned, "canvases": canvases, "yield": round(returned / canvases, 4),
            "quality_per_molecule": round(quality / max(1, returned), 4),
            "quality_per_canvas": round(quality / canvases, 4),
            "diversity_mean": round(sum(diversities) / len(diversities), 4) if diversities else None,
            "seconds_per_molecule": round(sum(r["seconds"] for r in rows) / max(1, returned), 2)}


def markdown(report: dict) -> str:
    lines = ["| request | returned | canvases | returned / canvases | quality per molecule | "
             "quality per canvas | diversity | s per molecule |", "|---|---|---|---|---|---|---|---|"]
    for rows, total, label in ((report["plain"], report["totals"]["plain"], "scaffold"),
                               (report["qed"], report["totals"]["qed"], "scaffold & QED >= 0.6")):
        for r in rows:
            lines.append(f"| {label}: `{r['scaffold']}` | {r['returned']} | {r['canvases']} | "
                         f"{r['returned'] / r['canvases']:.3f} | {r['quality'] / max(1, r['returned']):.3f} | "
                         f"{r['quality'] / r['canvases']:.3f} | {r['diversity'] if r['diversity'] is not None else '-'}"
                         f" | {r['seconds'] / max(1, r['returned']):.2f} |")
        lines.append(f"| **{label}, all** | {total['returned']} | "
                     f"{total['canvases']} | {total['yield']:.3f} | {total['quality_per_molecule']:.3f} | "
                     f"{total['quality_per_canvas']:.3f} | {total['diversity_mean']} | "
                     f"{total['seconds_per_molecule']:.2f} |")
    lines.append(f"\nGenMol (SAFE, discrete diffusion), scaffold decoration: validity {GENMOL['validity']:.1%} of "
                 f"samples, quality {GENMOL['quality']:.1%} of samples. Quality: unique, QED >= {QUALITY_QED}, "
                 f"SA <= {QUALITY_SA:g}.")
    return "\n".join(lines)


def main() -> None:
    RDLogger.DisableLog("rdApp.*")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--scaffolds", type=count(1), default=4, help="MOSES test-set scaffolds, drawn with --seed")
    parser.add_argument("--canvases", type=count(1), default=128, help="canvases per scaffold")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the scaffold draw and the sampling")
    parser.add_argument("--threads", type=count(1), default=2, help=THREADS_HELP)
    add_out_argument(parser, "scaffold_decoration.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    designer = MoleculeDesigner.from_pretrained(args.checkpoint)
    scaffolds = test_scaffolds(args.scaffolds, args.seed)
    report = {"meta": {"checkpoint": relative(designer.model.source), "weights": weights_digest(designer.model.source),
                       "scaffolds": args.scaffolds, "canvases": args.canvases, "seed": args.seed,
                       "threads": args.threads, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")},
              "genmol": GENMOL}
    for key, qed in (("plain", None), ("qed", (QUALITY_QED, 1.0))):
        report[key] = []
        for scaffold in scaffolds:
            row = decorate(designer, scaffold, args.canvases, args.seed, qed)
            print(f"{key:5s} {scaffold:40s} {row['returned']} from {row['canvases']} canvases, "
                  f"quality {row['quality']}, {row['seconds']} s", file=sys.stderr)
            report[key].append(row)
    report["totals"] = {key: summary(report[key]) for key in ("plain", "qed")}
    table = markdown(report)
    print(table)
    write_results(args.out, report, table)


if __name__ == "__main__":
    main()
