"""Raw samples of molecule checkpoints, judged against MOSES *training* molecules (never the test set): for
comparing checkpoints during development, and for seeing why raw samples fail.

    python benchmarks/molecule_raw.py [--checkpoints models/molecules,runs/x/model] [--samples 2000]
                                      [--passes 48,96] [--conditions none,train]
                                      [--temperatures 0.8:0.4,0.5:0.2] [--entropy-bounds 0.1,0.3]

Per checkpoint: `--samples` unconditioned canvases from the stock sampler (the checkpoint's own
generation_config.json, as in benchmarks/molecules.py's model-only column, same seed for every checkpoint);
`--passes` adds rows at other numbers of denoising passes, `--temperatures` (t_max:t_min, the schedule from the
first pass to the last) and `--entropy-bounds` at other sampler settings, for choosing the released ones on
training statistics; `--conditions train` adds rows whose prompts carry the
property bins (logP, MW, TPSA) of random MOSES training molecules instead of none, sampling the model's joint
distribution as the data's conditions times the model's conditional (MW also tells the model a length);
validity, uniqueness of the valid, FCD against 10,000 training molecules, heavy atoms per valid molecule,
SMILES tokens per sample against the training molecules, and what the invalid samples fail on (unbalanced
parentheses, other parse failures such as ring digits, aromatic rings RDKit cannot kekulize, other chemistry).
Writes JSON and a markdown table (default benchmarks/results/molecule_raw.*).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from molecules import CACHE, stock_samples, train_sample
from rdkit import Chem, RDLogger, rdBase
from reporting import THREADS_HELP, add_out_argument, count, names, write_results

from diffsolve.core import load_model, released_config, weights_digest
from diffsolve.tasks import molecule_metrics as mm
from diffsolve.tasks import molecules as task
from diffsolve.tasks.molecule_canvas import bin_token
from diffsolve.tasks.molecule_data import exact_properties, split_smiles

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


def training_conditions(n: int, seed: int) -> list[dict[str, int]]:
    """Prompt bins of n random MOSES training molecules (drawn with `seed`; the FCD reference uses seed 40)."""
    mols = [Chem.MolFromSmiles(s) for s in train_sample(n, seed)]
    return [{k: bin_token(k, v) for k, v in exact_properties(m, task.CONDITIONED).items()} for m in mols]


def evaluate(model, checkpoint: str, samples: int, seed: int, ref: dict, passes: int | None = None,
             conditions: list[dict[str, int]] | None = None, temperature: tuple[float, float] | None = None,
             entropy_bound: float | None = None) -> dict:
    stock = released_config(model)  # the checkpoint's own settings (the released defaults where it ships none)
    passes = passes or stock.max_denoising_steps
    t_max, t_min = temperature or (stock.t_max, stock.t_min)
    entropy_bound = entropy_bound or stock.entropy_bound
    smiles, seconds = stock_samples(model, samples, seed, conditions=conditions, max_denoising_steps=passes,
                                    t_max=t_max, t_min=t_min, entropy_bound=entropy_bound)
    valid = [c for c in map(mm.canonical, smiles) if c]
    reasons = Counter(r for r in map(failure, smiles) if r)
    invalid = max(1, sum(reasons.values()))
    return {"checkpoint": checkpoint, "weights": weights_digest(checkpoint), "seed": seed,
            "passes": passes, "t_max": t_max, "t_min": t_min, "entropy_bound": entropy_bound,
            "conditions": "train" if conditions else "none",
            "samples": samples, "valid": len(valid) / samples,
            "unique": len(set(valid)) / max(1, len(valid)),
            "fcd_train": mm.frechet_distance(mm.chemnet_stats(valid), ref["chemnet"]) if len(valid) > 1 else None,
            "heavy_atoms": float(np.mean([Chem.MolFromSmiles(c).GetNumHeavyAtoms() for c in valid])) if valid else None,
            "tokens": float(np.mean([len(split_smiles(s)) for s in smiles if s])), "train_tokens": ref["tokens"],
            "failures": {k: reasons[k] / invalid for k in FAILURES}, "seconds": seconds}


def row_key(row: dict) -> tuple:
    """What makes two rows the same measurement (rows written before --passes existed ran 48, unprompted; before
    --temperatures and --entropy-bounds, 0.8 -> 0.4 with bound 0.1)."""
    return (str(Path(row["checkpoint"])), row.get("passes", 48), row.get("t_max", 0.8), row.get("t_min", 0.4),
            row.get("entropy_bound", 0.1), row.get("conditions", "none"), row["samples"])


def temperatures(text: str) -> list[tuple[float, float] | None]:
    """'0.8:0.4,0.5:0.2' -> [(0.8, 0.4), (0.5, 0.2)]; '' -> [None] (the checkpoint's own)."""
    pairs = []
    for item in filter(None, text.split(",")):
        hi, sep, lo = item.partition(":")
        try:
            pair = (float(hi), float(lo if sep else hi))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not t_max:t_min (e.g. 0.8:0.4)") from None
        if not (0 <= pair[1] <= pair[0] and pair[0] > 0):
            raise argparse.ArgumentTypeError(f"{item!r}: need 0 <= t_min <= t_max and t_max > 0")
        pairs.append(pair)
    return pairs or [None]


def bounds(text: str) -> list[float | None]:
    """'0.1,0.3' -> [0.1, 0.3]; '' -> [None] (the checkpoint's own)."""
    try:
        values = [float(b) for b in filter(None, text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if any(not b > 0 for b in values):
        raise argparse.ArgumentTypeError(f"{text!r}: entropy bounds must be > 0")
    return values or [None]


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    head = ["checkpoint", "passes", "T", "entropy bound", "conditions", "canvases", "valid", "unique", "FCD vs train",
            "heavy atoms", "tokens (train)", *(f"{k} % of invalid" for k in FAILURES), "s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [r["checkpoint"], r["passes"], f"{r.get('t_max', 0.8)} -> {r.get('t_min', 0.4)}",
                 r.get("entropy_bound", 0.1), r["conditions"], r["samples"], f"{r['valid']:.3f}",
                 f"{r['unique']:.3f}", number(r["fcd_train"], 1), number(r["heavy_atoms"], 1),
                 f"{r['tokens']:.1f} ({r['train_tokens']:.1f})", *(f"{100 * r['failures'][k]:.0f}" for k in FAILURES),
                 f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="models/molecules", help="comma-separated model directories")
    parser.add_argument("--samples", type=count(1), default=2000, help="canvases per row")
    parser.add_argument("--seed", type=count(0), default=123_456, help="sampling seed, the same for every row")
    parser.add_argument("--threads", type=count(1), default=1, help=THREADS_HELP)
    parser.add_argument("--passes", default="", help="comma-separated pass counts (default: each checkpoint's own)")
    parser.add_argument("--conditions", type=names(("none", "train")), default="none",
                        help="none, train or none,train: the prompts' property bins")
    parser.add_argument("--temperatures", type=temperatures, default=[None],
                        help="comma-separated t_max:t_min schedules (default: each checkpoint's own)")
    parser.add_argument("--entropy-bounds", type=bounds, default=[None],
                        help="comma-separated entropy bounds (default: each checkpoint's own)")
    add_out_argument(parser, "molecule_raw.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows already in --out that this run does not redo (same checkpoint, passes, "
                             "temperature, entropy bound, conditions and canvases)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Read what --merge keeps before sampling, so that a bad file fails in seconds, not after the run.
    previous = json.loads(args.out.read_text())["rows"] if args.merge and args.out.is_file() else []
    for checkpoint in args.checkpoints.split(","):  # a row of the same name must be of the same weights
        stale = {r.get("weights") for r in previous if str(Path(r["checkpoint"])) == str(Path(checkpoint))}
        if stale - {weights_digest(checkpoint)}:
            sys.exit(f"{args.out} holds rows of {checkpoint} with other weights than it holds now; cannot --merge "
                     "(rename the earlier rows' checkpoint, or start a new file)")
    RDLogger.DisableLog("rdApp.*")
    ref = training_reference()
    try:
        passes = [count(1)(p) for p in args.passes.split(",") if p] or [None]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"--passes: {exc}")
    kinds = args.conditions
    conditions = training_conditions(args.samples, args.seed) if "train" in kinds else None
    rows = []
    for checkpoint in args.checkpoints.split(","):
        model = load_model(checkpoint)
        for steps, temperature, bound, kind in itertools.product(passes, args.temperatures, args.entropy_bounds,
                                                                 kinds):
            row = evaluate(model, checkpoint, args.samples, args.seed, ref, steps,
                           conditions if kind == "train" else None, temperature, bound)
            rows.append(row)
            print(f"  {checkpoint} {row['passes']} passes, T {row['t_max']} -> {row['t_min']}, bound "
                  f"{row['entropy_bound']}, conditions {kind}: valid {row['valid']:.3f}, unique {row['unique']:.3f}, "
                  f"FCD vs train {number(row['fcd_train'], 2)}", file=sys.stderr, flush=True)
    redone = {row_key(r) for r in rows}
    rows = [r for r in previous if row_key(r) not in redone] + rows
    table = markdown(rows)
    print(table)
    write_results(args.out, {"rows": rows, "meta": {"threads": args.threads, "torch": torch.__version__,
                                                    "rdkit": rdBase.rdkitVersion}}, table)


if __name__ == "__main__":
    main()
