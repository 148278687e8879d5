"""Molecule benchmark: MOSES distribution metrics and constrained-generation success.

    python benchmarks/molecules.py [--samples 10000] [--per-request 10] [--checkpoint DIR] [--sections ...]

Needs the MOSES data (`pip install --no-deps molsets==0.3.1`) and `fcd_torch` (`make bench` installs both).

1. Distribution: `--samples` canvases from (a) the model only (stock sampler, no conditions, no guidance:
   validity *before* repair) and (b) the full system (`MoleculeDesigner`, guided: every molecule returned is
   verified). MOSES metrics on each against the whole MOSES test set, computed as MOSES's code computes them:
   validity, unique@1k/10k, novelty vs train, IntDiv1/2, filters, FCD/Test, SNN/Test, Frag/Test, Scaf/Test;
   seconds per returned molecule. The generated strings are kept beside the JSON (`<out>_samples/*.smi`), and
   `--rescore` computes the metrics again from them.
2. Constrained generation: requests for `--per-request` molecules each (property windows inside and
   outside the training distribution, substructures, decoration of MOSES test-set scaffolds, scaffold +
   property, no structural alert of RDKit's catalogs); success = verified molecules returned / requested within
   the default budget.

Reference statistics (canonical train set, test-set ChemNet statistics, fingerprints, fragments, scaffolds)
are computed once (about 20 minutes) and cached in `runs/moses_reference/`. Writes JSON, a markdown table and a plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, RDLogger

from diffsolve.core import generate, one_canvas, released_config, weights_digest, write_atomically
from diffsolve.solvers import MoleculeDesigner
from diffsolve.tasks import molecule_metrics as mm
from diffsolve.tasks import molecules as task
from diffsolve.tasks.molecule_data import read_moses
from diffsolve.tasks.molecule_request import MoleculeRequest, RequestError
from reporting import (ROOT, THREADS_HELP, add_out_argument, count, names, pyplot, relative, same_settings,
                       save_figure, write_results)

CACHE = ROOT / "runs" / "moses_reference"
ANCHORS = {  # MOSES paper (Polykovskiy et al. 2020), Table 2
    "CharRNN": {"valid": 0.975, "unique@10k": 0.999, "novelty": 0.842, "fcd_test": 0.073, "snn_test": 0.601,
                "frag_test": 1.000, "scaf_test": 0.924, "intdiv1": 0.856, "filters": 0.994},
    "VAE": {"valid": 0.977, "unique@10k": 0.998, "novelty": 0.695, "fcd_test": 0.099, "snn_test": 0.626,
            "frag_test": 0.999, "scaf_test": 0.939, "intdiv1": 0.856, "filters": 0.997},
    "JT-VAE": {"valid": 1.000, "unique@10k": 0.999, "novelty": 0.914, "fcd_test": 0.395, "snn_test": 0.548,
               "frag_test": 0.996, "scaf_test": 0.892, "intdiv1": 0.855, "filters": 0.976},
}


# ------------------------------------------------------------------------------------------ reference
@contextmanager
def cache_lock():
    """One process at a time builds the reference cache; another waits, then finds it built."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def reference() -> dict:
    """Everything the metrics compare against, computed once from the whole MOSES test set (176k molecules) and
    cached, as MOSES's own test statistics are: ChemNet statistics (FCD), fingerprints (SNN), fragment and
    scaffold counts (Frag, Scaf); and the canonical training set (novelty): about 20 minutes on one core."""
    train_path, counts_path = CACHE / "train_canonical.txt", CACHE / "test_counts_v2.json"
    fps_path = CACHE / "test_fps.npy"
    with cache_lock():
        if not train_path.is_file():
            print("canonicalizing the MOSES train set (once)...", file=sys.stderr)
            train = sorted({c for c in map(mm.canonical, read_moses("train")) if c})
            write_atomically(train_path, lambda tmp: tmp.write_text("\n".join(train)))
        test = read_moses("test")
        if not counts_path.is_file():
            print("test-set fragments and scaffolds (once)...", file=sys.stderr)
            mols = [Chem.MolFromSmiles(s) for s in test]
            counts = {"frag": mm.fragment_counts(mols), "scaf": mm.scaffold_counts(mols)}
            write_atomically(counts_path, lambda tmp: tmp.write_text(json.dumps(counts)))
        if not fps_path.is_file():
            print("test-set fingerprints (once)...", file=sys.stderr)
            fps = mm.fingerprints([Chem.MolFromSmiles(s) for s in test]).to(torch.uint8).numpy()
            write_atomically(fps_path, lambda tmp: _numpy_file(tmp, np.save, fps))
    counts = json.loads(counts_path.read_text())
    return {"train": set(train_path.read_text().split("\n")), "chemnet": reference_chemnet(),
            "frag": counts["frag"], "scaf": counts["scaf"],
            "fps": torch.from_numpy(np.load(fps_path)).float()}


def _numpy_file(path: Path, save, *args, **kwargs) -> None:
    """`save` (np.save, np.savez) into `path` through a file object: given a name, numpy would add its own
    suffix to the temporary one."""
    with open(path, "wb") as f:
        save(f, *args, **kwargs)


def reference_chemnet() -> dict:
    """ChemNet statistics of the whole MOSES test set, what FCD/Test compares against (cached)."""
    path = CACHE / "test_chemnet.npz"
    with cache_lock():
        if not path.is_file():
            print("ChemNet statistics of the MOSES test set (once; about 15 minutes)...", file=sys.stderr)
            stats = mm.chemnet_stats(read_moses("test"))
            write_atomically(path, lambda tmp: _numpy_file(tmp, np.savez, **stats))
    with np.load(path) as stats:
        return {k: stats[k] for k in stats.files}


def train_sample(n: int, seed: int) -> list[str]:
    """n MOSES training molecules: the floor every metric can reach (novelty is 0 by definition)."""
    train = read_moses("train")
    return [train[i] for i in np.random.default_rng(seed + 1).permutation(len(train))[:n]]


def distribution_metrics(smiles: list[str], ref: dict, patterns) -> dict:
    from collections import Counter

    canon = [mm.canonical(s) for s in smiles]
    valid = [c for c in canon if c]
    metrics = {"samples": len(smiles), "valid": len(valid) / max(1, len(smiles)),
               "unique@1k": mm.unique_at(valid, 1000), "unique@10k": mm.unique_at(valid, 10_000)}
    if len(valid) < 2:
        return metrics
    mols = [Chem.MolFromSmiles(s) for s in valid]  # as MOSES: every valid molecule, repeats included
    fps = mm.fingerprints(mols)
    metrics.update({
        "novelty": mm.novelty(valid, ref["train"]),
        "intdiv1": mm.internal_diversity(fps, 1), "intdiv2": mm.internal_diversity(fps, 2),
        "filters": sum(mm.passes_filters(m, patterns) for m in mols) / len(mols),
        "fcd_test": mm.frechet_distance(mm.chemnet_stats(valid), ref["chemnet"]),
        "snn_test": mm.snn(fps, ref["fps"]),
        "frag_test": mm.cosine(mm.fragment_counts(mols), Counter(ref["frag"])),
        "scaf_test": mm.cosine(mm.scaffold_counts(mols), Counter(ref["scaf"])),
    })
    return metrics


# ------------------------------------------------------------------------------------------ sampling
@torch.no_grad()
def stock_samples(model, n: int, seed: int, batch: int = 250, conditions: list[dict[str, int]] | None = None,
                  **overrides) -> tuple[list[str], float]:
    """The model alone: unconditioned prompts (or `conditions`, one dict of bin tokens per canvas), the
    checkpoint's own sampler settings (generation_config.json, with `overrides`; no masks, no re-noising, no
    verifier)."""
    config = released_config(model, eos_token_id=task.EOS, pad_token_id=task.PAD, drop_finished=True,
                             **one_canvas(task.CANVAS), **overrides)
    conditions = [{}] * n if conditions is None else conditions
    if len(conditions) != n:
        raise ValueError(f"{len(conditions)} conditions for {n} canvases")
    from tqdm.auto import tqdm

    out, began = [], time.perf_counter()
    with tqdm(total=n, desc="model only", unit="canvas", file=sys.stderr) as bar:
        for start in range(0, n, batch):
            rows = min(batch, n - start)
            prompt = task.encode_prompts(conditions[start:start + rows], [None] * rows)
            result = generate(model, prompt, config, generator=torch.Generator().manual_seed(seed + start))
            out += [s or "" for s in task.decode(result.canvas)]
            bar.update(rows)
    return out, time.perf_counter() - began


def full_system_samples(designer: MoleculeDesigner, n: int, seed: int) -> tuple[list[str], dict]:
    """What users get from the same number of canvases: `MoleculeDesigner.generate` without conditions
    (verified, de-duplicated molecules; uniqueness is by construction here)."""
    from tqdm.auto import tqdm

    with tqdm(total=n, desc="full system", unit="canvas", file=sys.stderr) as bar:
        result = designer.generate(n, seed=seed, budget=n, on_round=lambda tried, found: bar.update(tried - bar.n))
    return [m.smiles for m in result], {"canvases": result.canvases, "seconds": result.seconds,
                                        "returned": len(result), "known": result.known, "atypical": result.atypical}


def constrained_requests(scaffolds: list[str]) -> list[tuple[str, str, dict]]:
    """(group, label, kwargs) of each request."""
    requests = [
        ("window, inside", "logP 2-3", {"logp": (2, 3)}),
        ("window, inside", "QED 0.8-1", {"qed": (0.8, 1.0)}),
        ("window, inside", "TPSA 40-60 & MW 300-340", {"tpsa": (40, 60), "mw": (300, 340)}),
        ("window, outside", "logP 5-6.5", {"logp": (5, 6.5)}),
        ("window, outside", "MW 360-420", {"mw": (360, 420)}),
        ("substructure", "sulfonamide", {"contains": "S(=O)(=O)N"}),
        ("substructure", "amide and halogen", {"contains": "C(=O)N.[F,Cl,Br]"}),
        ("substructure + property", "amide & MW 250-330", {"contains": "C(=O)N", "mw": (250, 330)}),
        ("no structural alert", "PAINS, BRENK", {"avoid": "PAINS,BRENK"}),
        ("no structural alert", "ChEMBL (8 sets)", {"avoid": "CHEMBL"}),
        ("no structural alert + property", "PAINS, BRENK & logP 2-3", {"avoid": "PAINS,BRENK", "logp": (2, 3)}),
    ]
    for scaffold in scaffolds:
        requests.append(("scaffold", scaffold, {"scaffold": scaffold}))
    for scaffold in scaffolds[:1]:
        requests.append(("scaffold + property", f"{scaffold} & QED >= 0.7", {"scaffold": scaffold, "qed": (0.7, 1)}))
    return requests


def test_scaffolds(k: int, seed: int) -> list[str]:
    """k distinct Bemis-Murcko scaffolds of molecules in MOSES's scaffold test set (unseen in training)."""
    from diffsolve.tasks.molecule_data import scaffold_smiles

    smiles = read_moses("test_scaffolds")
    order = np.random.default_rng(seed).permutation(len(smiles))
    found: list[str] = []
    for i in order:
        scaffold = scaffold_smiles(Chem.MolFromSmiles(smiles[i]))
        try:
            MoleculeRequest.parse(scaffold=scaffold)
        except RequestError:
            continue
        if scaffold and scaffold not in found:
            found.append(scaffold)
        if len(found) == k:
            return found
    return found


SECTIONS = ("model_only", "full_system", "constrained")
# Distribution metrics computed as MOSES's code computes them (molsets 0.3.1, `tasks/molecule_metrics.py`) against
# the whole test set. Results without this mark were computed before 2026-12-06 with earlier definitions.
METRIC_DEFINITIONS = "moses-0.3.1"
EARLIER_DEFINITIONS = ("unique valid molecules only; Frag over BRICSDecompose's set per molecule; Scaf with one-ring "
                       "scaffolds; FCD, Frag and Scaf against a seeded 10k subset of the test set")


def samples_path(out: Path, section: str) -> Path:
    """Where a run keeps the strings a section generated (one per line; an empty line for a canvas that decoded
    to nothing), so that its metrics can be computed again (`--rescore`) without generating."""
    return out.with_name(out.stem + "_samples") / f"{section}.smi"


def save_samples(path: Path, smiles: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text("".join(f"{s}\n" for s in smiles)))


def load_samples(path: Path) -> list[str]:
    if not path.is_file():
        sys.exit(f"--rescore: {path} is missing (only runs since 2026-12-06 keep their samples)")
    return path.read_text().split("\n")[:-1]


def distribution_section(designer: MoleculeDesigner, samples: int, full_canvases: int, seed: int,
                         sections: list[str], earlier: dict, out: Path, rescore: bool = False) -> dict:
    """MOSES metrics of the model alone, of the full system and of a training sample as large as the full
    system's (the sections not in `sections` are taken from `earlier`). The generated strings are saved beside
    `out`; with `rescore`, the metrics are computed again from those instead of generating."""
    report = dict(earlier)
    chosen = [section for section in ("model_only", "full_system") if section in sections]
    if not chosen:
        return report
    generated = {}
    for section in chosen:
        path = samples_path(out, section)
        if rescore:
            generated[section] = load_samples(path)
            continue
        if section == "model_only":
            generated[section], seconds = stock_samples(designer.model, samples, seed)
            valid = sum(1 for s in generated[section] if mm.canonical(s))
            report[section] = {"seconds": seconds, "s_per_molecule": seconds / max(1, valid),
                               "threads": torch.get_num_threads()}
        else:
            generated[section], stats = full_system_samples(designer, full_canvases, seed)
            report[section] = {**stats, "s_per_molecule": stats["seconds"] / max(1, stats["returned"]),
                               "canvas_validity": stats["returned"] / stats["canvases"],
                               "threads": torch.get_num_threads()}
        save_samples(path, generated[section])
    ref = reference()
    patterns = mm.filter_patterns()
    for section, smiles in generated.items():
        report[section] = {**report.get(section, {}), **distribution_metrics(smiles, ref, patterns),
                           "definitions": METRIC_DEFINITIONS}
    floor = report.get("full_system", {}).get("samples", samples)
    report["train_sample"] = {**distribution_metrics(train_sample(max(2, floor), seed), ref, patterns),
                              "definitions": METRIC_DEFINITIONS}
    return report


def run_constrained(designer: MoleculeDesigner, per_request: int, scaffolds: list[str], seed: int) -> list[dict]:
    rows = []
    for group, label, kwargs in constrained_requests(scaffolds):
        parts = ("contains", "scaffold", "avoid")
        request = MoleculeRequest.parse({k: v for k, v in kwargs.items() if k not in parts},
                                             **{k: v for k, v in kwargs.items() if k in parts})
        result = designer.design(per_request, request, seed=seed)
        all_true = all(request.verify(Chem.MolFromSmiles(m.smiles))[0] for m in result)
        rows.append({"group": group, "request": label, "requested": per_request, "returned": len(result),
                     "success": len(result) / per_request, "all_verified_true": all_true,
                     "canvases": result.canvases, "seconds": round(result.seconds, 2),
                     "s_per_molecule": round(result.seconds / max(1, len(result)), 3)})
        print(f"{group:20s} {label:40s} {len(result)}/{per_request} in {result.seconds:.1f} s", file=sys.stderr)
    return rows


# ------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    keys = ["valid", "unique@1k", "unique@10k", "novelty", "intdiv1", "filters", "fcd_test", "snn_test",
            "frag_test", "scaf_test"]
    cols = {"model only (stock sampler)": report["distribution"]["model_only"],
            "full system (verified)": report["distribution"]["full_system"],
            "MOSES train sample (floor)": report["distribution"]["train_sample"], **ANCHORS}
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key in keys:
        cells = [f"{c[key]:.3f}" if isinstance(c.get(key), float) else "-" for c in cols.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    stock, full = report["distribution"]["model_only"], report["distribution"]["full_system"]
    def on(column: dict) -> str:
        return f" on {column['threads']} thread{'s' * (column['threads'] != 1)}" if "threads" in column else ""

    lines.append(f"\nmodel only: {stock['samples']} canvases, {stock['valid']:.1%} valid before any repair, "
                 f"{stock['s_per_molecule']:.2f} s per valid molecule{on(stock)}")
    lines.append(f"full system: {full['canvases']} canvases -> {full['returned']} distinct verified molecules "
                 f"({full['canvas_validity']:.1%} of canvases), {full['s_per_molecule']:.2f} s per molecule{on(full)}"
                 + (f"; left out {full['known']} MOSES training molecules and {full['atypical']} by the "
                    "training-likeness acceptance" if "atypical" in full else ""))
    lines += ["", "| group | request | returned / requested | all constraint-true | s per molecule |",
              "|---|---|---|---|---|"]
    for r in report["constrained"]:
        lines.append(f"| {r['group']} | {r['request']} | {r['returned']}/{r['requested']} | "
                     f"{'yes' if r['all_verified_true'] else 'NO'} | {r['s_per_molecule']:.2f} |")
    total = sum(r["returned"] for r in report["constrained"]) / sum(r["requested"] for r in report["constrained"])
    lines.append(f"\nconstrained success overall: {total:.3f}")
    for section, day in report["meta"].get("rerun", {}).items():
        lines.append(f"({section.replace('_', ' ')} rerun on {day} with --sections; the other sections are from an "
                     "earlier run of the same checkpoint)")
    for section, day in report["meta"].get("rescored", {}).items():
        lines.append(f"({section.replace('_', ' ')} metrics computed again on {day} from the saved samples)")
    earlier = [name.replace("_", " ") for name, column in report["distribution"].items()
               if column.get("definitions") != METRIC_DEFINITIONS]
    if earlier:
        lines.append(f"({' and '.join(earlier)}: computed before 2026-12-06 with earlier definitions, not yet rerun: "
                     f"{EARLIER_DEFINITIONS})")
    if "note" in report["meta"]:
        lines.append(report["meta"]["note"])
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    rows = report["constrained"]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.2))
    colors = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(r["group"] for r in rows))}
    ax.barh(range(len(rows)), [r["success"] for r in rows], color=[colors[r["group"]] for r in rows])
    labels = [r["request"] if len(r["request"]) <= 48 else r["request"][:47] + "…" for r in rows]  # cut visibly
    ax.set_yticks(range(len(rows)), [f"{r['group']}: {label}" for r, label in zip(rows, labels)], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.95, color="k", ls="--", lw=1, label="goal 0.95")
    ax.set_xlim(0, 1)
    ax.set_xlabel("verified molecules returned / requested")
    ax.set_title("Constrained generation (every returned molecule RDKit-verified)")
    ax.legend(loc="lower right")
    save_figure(fig, path)
    return True


def main() -> None:
    RDLogger.DisableLog("rdApp.*")  # the model-only samples include invalid SMILES by design
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--samples", type=count(1), default=10_000, help="canvases for the distribution metrics")
    parser.add_argument("--full-canvases", type=count(1), default=None,
                        help="canvases for the full system's distribution metrics (default: --samples); the full "
                             "system keeps fewer molecules per canvas than the model alone")
    parser.add_argument("--per-request", type=count(1), default=5, help="molecules asked for per constrained request")
    parser.add_argument("--scaffolds", type=count(1), default=4,
                        help="MOSES test-set scaffolds to decorate, drawn with --seed")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the samples, requests and scaffold draw")
    parser.add_argument("--threads", type=count(1), default=2, help=THREADS_HELP)
    add_out_argument(parser, "molecules.json")
    parser.add_argument("--sections", type=names(tuple(SECTIONS)), default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} to run; the others are kept from the "
                             "existing --out JSON (which must be of the same checkpoint and samples)")
    parser.add_argument("--rescore", action="store_true",
                        help="compute the distribution metrics of --sections again from the samples an earlier run "
                             "saved beside --out (<out>_samples/*.smi), without generating; other numbers are kept")
    args = parser.parse_args()
    sections = args.sections
    if args.rescore and "constrained" in sections:
        parser.error("--rescore recomputes the distribution metrics: give --sections model_only,full_system or one")
    torch.set_num_threads(args.threads)

    designer = MoleculeDesigner.from_pretrained(args.checkpoint)
    checkpoint = relative(designer.model.source)
    full_canvases = args.full_canvases or args.samples
    weights = weights_digest(designer.model.source)
    meta = {"checkpoint": checkpoint, "weights": weights, "samples": args.samples, "full_canvases": full_canvases,
            "per_request": args.per_request, "seed": args.seed,
            "threads": args.threads, "torch": torch.__version__}
    earlier = {"meta": {}, "distribution": {}, "constrained": []}
    if len(sections) < len(SECTIONS) or args.rescore:
        if not args.out.is_file():
            sys.exit(f"--sections {','.join(sections)} needs {args.out} from a full run of {checkpoint} with --samples "
                     f"{args.samples}")
        earlier = json.loads(args.out.read_text())
        same_settings(args.out, earlier["meta"], meta, ("checkpoint", "samples", "weights"), "--sections")
        done = "rescored" if args.rescore else "rerun"
        again = {**earlier["meta"].get(done, {}), **{s: time.strftime("%Y-%m-%d") for s in sections}}
        meta = {**earlier["meta"], "weights": weights, done: again}
        if not args.rescore:  # a rescore times nothing: the earlier run's settings stay
            meta |= {"per_request": args.per_request, "threads": args.threads}
        if "full_system" in sections and not args.rescore:
            meta["full_canvases"] = full_canvases
    distribution = distribution_section(designer, args.samples, full_canvases, args.seed, sections,
                                        earlier["distribution"], args.out, args.rescore)
    constrained = (run_constrained(designer, args.per_request, test_scaffolds(args.scaffolds, args.seed), args.seed)
                   if "constrained" in sections else earlier["constrained"])
    report = {"meta": meta, "distribution": distribution, "constrained": constrained}
    table = markdown(report)
    print(table)
    write_results(args.out, report, table, lambda path: plot(report, path))


if __name__ == "__main__":
    main()
