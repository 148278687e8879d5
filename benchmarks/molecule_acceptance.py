"""Training-likeness acceptance: how far each form of it pulls the designer's molecules toward MOSES, per
molecule kept.

    python benchmarks/molecule_acceptance.py [--checkpoint models/molecules] [--fit 7000] [--test 3000]

The designer's verified free-generation molecules (training prior and novelty filter on, acceptance off;
generated in seeded chunks of 1,000 and cached in runs/acceptance/) are split into a fitting set and a
held-out set. Each variant is fitted on the fitting set against MOSES training molecules and applied to the
held-out set; `--draws` acceptance draws are averaged. Per variant: the fraction kept, FCD/Test of the kept
molecules, of as many held-out molecules drawn at random (no acceptance), and of as many MOSES training
molecules (the floor at that sample size: FCD grows as samples shrink). "Above floor" is what a variant
leaves to remove. Variants: the checkpoint's shipped acceptance; the logistic regression of
tasks/molecule_acceptance.py at several cap quantiles; two logistic stages in a row (the second fitted on
what the first kept); and a two-hidden-layer MLP on the same features, to see whether a stronger classifier
pays. Writes JSON, a markdown table and a plot (kept fraction against FCD above the floor).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from molecules import reference_chemnet, train_sample
from rdkit import Chem, RDLogger
from reporting import ROOT, THREADS_HELP, add_out_argument, count, pyplot, save_figure, write_results

from diffsolve.core import weights_digest
from diffsolve.solvers import MoleculeDesigner
from diffsolve.tasks import molecule_metrics as mm
from diffsolve.tasks.molecule_acceptance import FILE, Acceptance, features
from diffsolve.tasks.molecule_data import read_moses

CHUNK = 1000  # designer molecules per cached file


def designer_molecules(checkpoint: str, n: int, first_seed: int) -> list[str]:
    """n verified molecules of free generation without the acceptance, from chunks cached per seed."""
    folder = ROOT / "runs" / "acceptance" / f"{Path(checkpoint).resolve().name}-{weights_digest(checkpoint)[7:]}"
    folder.mkdir(parents=True, exist_ok=True)
    designer, smiles = None, []
    for seed in range(first_seed, first_seed + -(-n // CHUNK)):
        path = folder / f"designer_{seed}.smi"
        if not path.is_file():
            designer = designer or MoleculeDesigner.from_pretrained(checkpoint, match_training=False)
            print(f"designing {CHUNK} molecules, seed {seed} (cached in {path})", file=sys.stderr, flush=True)
            path.write_text("\n".join(m.smiles for m in designer.generate(CHUNK, seed=seed)) + "\n")
        smiles += path.read_text().split()
    return smiles[:n]


def fit_mlp(designer: torch.Tensor, training: torch.Tensor, hidden: int = 128, epochs: int = 60, seed: int = 0):
    """Class-balanced MLP classifier with early stopping on a held-out fifth; returns x -> p_train / p_designer."""
    torch.manual_seed(seed)
    x = torch.cat([designer, training]).float()
    y = torch.cat([torch.ones(len(designer)), torch.zeros(len(training))])
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / scale
    order = torch.randperm(len(z))
    held, train = order[: len(z) // 5], order[len(z) // 5:]
    net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    balance = torch.tensor(len(training) / len(designer))

    def loss(rows: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(net(z[rows]).squeeze(1), y[rows],
                                                                    pos_weight=balance)

    best, state = float("inf"), None
    for _ in range(epochs):
        net.train()
        for rows in train[torch.randperm(len(train))].split(256):
            optimizer.zero_grad()
            loss(rows).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            held_loss = float(loss(held))
        if held_loss < best:
            best, state = held_loss, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)

    @torch.no_grad()
    def ratio(features_: torch.Tensor) -> torch.Tensor:
        return torch.exp(-net((features_.float() - mean) / scale).squeeze(1)).double()

    return ratio


def keep_probabilities(fit: list[Chem.Mol], held: list[Chem.Mol], training: list[Chem.Mol], checkpoint: str,
                       quantiles: list[float], seed: int) -> dict[str, np.ndarray]:
    """Each variant's probability of keeping each held-out molecule."""
    half = len(training) // 2
    variants = {}
    shipped = Path(checkpoint) / FILE
    if shipped.is_file():
        acceptance = Acceptance.load(shipped)
        variants[f"shipped (q {acceptance_quantile(shipped)})"] = acceptance.keep_probability(held).numpy()
    for q in quantiles:
        print(f"logistic, q {q}", file=sys.stderr, flush=True)
        variants[f"logistic q {q}"] = Acceptance.fit(fit, training[:half], q).keep_probability(held).numpy()
    first = Acceptance.fit(fit, training[:half], 0.8)
    kept = [m for m, k in zip(fit, first.accept(fit, torch.Generator().manual_seed(seed))) if k]
    for q in (0.5, 0.8):
        print(f"two logistic stages, q 0.8 then {q}", file=sys.stderr, flush=True)
        second = Acceptance.fit(kept, training[half:], q)
        variants[f"logistic q 0.8, then q {q}"] = (first.keep_probability(held) * second.keep_probability(held)).numpy()
    print("MLP", file=sys.stderr, flush=True)
    ratio = fit_mlp(features(fit), features(training[:half]), seed=seed)
    ratio_fit, ratio_held = ratio(features(fit)), ratio(features(held))
    for q in quantiles[:2]:
        variants[f"MLP 2x128 q {q}"] = (ratio_held / torch.quantile(ratio_fit, q)).clamp(max=1).numpy()
    return variants


def acceptance_quantile(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata().get("quantile", "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="models/molecules", help="model directory whose samples are judged")
    parser.add_argument("--fit", type=count(1), default=7000, help="designer molecules to fit on (seeds 100, 101, ...)")
    parser.add_argument("--test", type=count(1), default=3000, help="held-out designer molecules (the seeds after)")
    parser.add_argument("--training", type=count(1), default=20000, help="MOSES training molecules (half per stage)")
    parser.add_argument("--quantiles", default="0.8,0.9,0.95",
                        help="comma-separated quantiles of the fitted density ratio that keep a molecule for sure")
    parser.add_argument("--draws", type=count(1), default=3, help="acceptance draws averaged per variant")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the training sample and the draws")
    parser.add_argument("--threads", type=count(1), default=2, help=THREADS_HELP)
    add_out_argument(parser, "molecule_acceptance.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RDLogger.DisableLog("rdApp.*")
    fit_seeds = -(-args.fit // CHUNK)
    fit_smiles = designer_molecules(args.checkpoint, args.fit, 100)
    held_smiles = designer_molecules(args.checkpoint, args.test, 100 + fit_seeds)
    train = read_moses("train")
    training = [Chem.MolFromSmiles(train[i])
                for i in np.random.default_rng(args.seed).choice(len(train), args.training, replace=False)]
    print("ChemNet activations", file=sys.stderr, flush=True)
    reference = reference_chemnet()
    held_activations = mm.chemnet_activations(held_smiles)
    floor_activations = mm.chemnet_activations(train_sample(args.test, args.seed + 7))

    def fcd(activations: np.ndarray) -> float:
        return mm.frechet_distance(mm.activation_stats(activations), reference)

    held = [Chem.MolFromSmiles(s) for s in held_smiles]
    variants = keep_probabilities([Chem.MolFromSmiles(s) for s in fit_smiles], held, training, args.checkpoint,
                                  [float(q) for q in args.quantiles.split(",")], args.seed)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, probability in variants.items():
        draws = []
        for _ in range(args.draws):
            kept = rng.random(len(probability)) < probability
            k = int(kept.sum())
            draws.append([k / len(kept), fcd(held_activations[kept]),
                          fcd(held_activations[rng.permutation(len(kept))[:k]]),
                          fcd(floor_activations[rng.permutation(len(floor_activations))[:k]])])
        kept_fraction, kept_fcd, random_fcd, floor_fcd = np.mean(draws, axis=0)
        rows.append({"variant": name, "kept": kept_fraction, "fcd_kept": kept_fcd, "fcd_random": random_fcd,
                     "fcd_floor": floor_fcd, "above_floor": kept_fcd - floor_fcd,
                     "random_above_floor": random_fcd - floor_fcd})
        print(f"  {name}: kept {kept_fraction:.3f}, FCD above floor {kept_fcd - floor_fcd:.3f} "
              f"(random {random_fcd - floor_fcd:.3f})", file=sys.stderr, flush=True)
    table = markdown(rows, len(fit_smiles), len(held_smiles), args)
    print(table)
    write_results(args.out, {"checkpoint": args.checkpoint, "fit": len(fit_smiles), "test": len(held_smiles),
                             "training": args.training, "draws": args.draws, "seed": args.seed, "rows": rows},
                  table, lambda path: plot(rows, path))


def markdown(rows: list[dict], fit: int, test: int, args: argparse.Namespace) -> str:
    lines = ["| acceptance | kept | FCD/Test kept | same number at random | same number of training molecules "
             "(floor) | kept: above floor | random: above floor |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['kept']:.3f} | {r['fcd_kept']:.3f} | {r['fcd_random']:.3f} | "
              f"{r['fcd_floor']:.3f} | **{r['above_floor']:.3f}** | {r['random_above_floor']:.3f} |" for r in rows]
    lines += ["", f"{args.checkpoint}: fitted on {fit} designer molecules against {args.training // 2} MOSES training "
              f"molecules, applied to {test} held-out designer molecules; mean of {args.draws} acceptance draws "
              f"(seed {args.seed})"]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family, marker in (("shipped", "*"), ("logistic q", "o"), ("then", "s"), ("MLP", "^")):
        chosen = [r for r in rows if family in r["variant"] and (family != "logistic q" or "then" not in r["variant"])]
        ax.scatter([r["kept"] for r in chosen], [r["above_floor"] for r in chosen], marker=marker, s=60,
                   label={"then": "two logistic stages"}.get(family, family.removesuffix(" q")))
        for r in chosen:
            ax.annotate(r["variant"].split("(")[-1].rstrip(")").removeprefix("logistic ").removeprefix("MLP 2x128 "),
                        (r["kept"], r["above_floor"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("fraction of verified molecules kept")
    ax.set_ylabel("FCD/Test above the floor (lower is better)")
    ax.set_ylim(bottom=0)
    ax.set_title("Training-likeness acceptance: FCD gained per molecule kept")
    ax.legend()
    save_figure(fig, path)
    return True


if __name__ == "__main__":
    main()
