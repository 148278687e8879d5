"""Training-likeness acceptance: rejection sampling that pulls free generation toward the MOSES distribution.

The designer's molecules differ from MOSES in ways a simple classifier sees (too many 7-membered rings, too few
aromatic and 5-membered rings, more rotatable bonds). A logistic regression, fitted once per checkpoint, tells
the designer's own verified molecules from MOSES training molecules on RDKit descriptors and Morgan counts (with
squared terms). For a balanced fit, exp(-logit) estimates p_train(x) / p_designer(x), and keeping each molecule
with probability min(1, ratio / cap) samples from the designer's distribution reweighted toward the training
one (discriminator rejection sampling, Azadi et al. 2019). The cap is a quantile of the ratio on the fitting
molecules: a lower cap keeps more molecules and corrects less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..core import CheckpointError, write_atomically
from .molecule_data import exact_properties

FILE = "acceptance.safetensors"  # beside the checkpoint's model.safetensors
FINGERPRINT_BITS = 256
COUNT_CAP = 4  # Morgan counts above this say nothing more
ELEMENTS = ("N", "O", "S", "F", "Cl", "Br")
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=1, fpSize=FINGERPRINT_BITS)


def _descriptors(mol: Chem.Mol) -> list[float]:
    rings = [len(r) for r in mol.GetRingInfo().AtomRings()]
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    return [*exact_properties(mol).values(),
            rdMolDescriptors.CalcNumAromaticRings(mol), rdMolDescriptors.CalcNumAromaticHeterocycles(mol),
            rdMolDescriptors.CalcNumAliphaticRings(mol), rdMolDescriptors.CalcFractionCSP3(mol),
            rdMolDescriptors.CalcNumRotatableBonds(mol),
            len(Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=False)),
            *(symbols.count(e) for e in ELEMENTS),
            sum(n <= 4 for n in rings), rings.count(5), rings.count(6), sum(n >= 7 for n in rings)]


def features(mols: Sequence[Chem.Mol]) -> Tensor:
    """[len(mols), F] float64: descriptors, then Morgan radius-1 counts (folded, capped)."""
    descriptors = np.array([_descriptors(m) for m in mols], dtype=np.float64).reshape(len(mols), -1)
    counts = np.array([_MORGAN.GetCountFingerprintAsNumPy(m) for m in mols], dtype=np.float64)
    counts = counts.reshape(len(mols), FINGERPRINT_BITS)
    return torch.from_numpy(np.concatenate([descriptors, np.minimum(counts, COUNT_CAP)], axis=1))


@dataclass
class Acceptance:
    mean: Tensor  # [F] feature standardization
    scale: Tensor  # [F]
    weight: Tensor  # [2F] on standardized features and their squares
    bias: Tensor  # []
    cap: float  # ratios at or above it are always kept

    def _design(self, x: Tensor) -> Tensor:
        z = (x - self.mean) / self.scale
        return torch.cat([z, z * z], dim=1)

    def ratio(self, mols: Sequence[Chem.Mol]) -> Tensor:
        """p_train / p_designer estimated for each molecule."""
        if not mols:
            return torch.zeros(0, dtype=torch.float64)
        return torch.exp(-(self._design(features(mols)) @ self.weight + self.bias))

    def keep_probability(self, mols: Sequence[Chem.Mol]) -> Tensor:
        """min(1, ratio / cap) for each molecule."""
        return (self.ratio(mols) / self.cap).clamp(max=1.0)

    def accept(self, mols: Sequence[Chem.Mol], generator: torch.Generator) -> Tensor:
        """Which molecules to keep: each with its keep probability."""
        draw = torch.rand(len(mols), generator=generator, dtype=torch.float64)
        return draw < self.keep_probability(mols)

    @classmethod
    def fit(cls, designer_mols: Sequence[Chem.Mol], training_mols: Sequence[Chem.Mol], quantile: float,
            l2: float = 1e-3) -> "Acceptance":
        """Class-balanced L2 logistic regression (L-BFGS) of designer (1) against training (0) molecules; the
        cap is the `quantile` of the ratio over the designer's molecules."""
        x = torch.cat([features(designer_mols), features(training_mols)])
        y = torch.cat([torch.ones(len(designer_mols)), torch.zeros(len(training_mols))]).double()
        mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
        model = cls(mean, scale, torch.zeros(2 * x.shape[1], dtype=torch.float64), torch.zeros((), dtype=torch.float64),
                    1.0)
        z = model._design(x)
        weight = model.weight.requires_grad_()
        bias = model.bias.requires_grad_()
        balance = torch.tensor(len(training_mols) / len(designer_mols), dtype=torch.float64)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

        def loss() -> Tensor:
            optimizer.zero_grad()
            value = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y, pos_weight=balance)
            value = value + l2 * weight.square().sum()
            value.backward()
            return value

        optimizer.step(loss)
        model.weight, model.bias = weight.detach(), bias.detach()
        designer_ratio = torch.exp(-(z[:len(designer_mols)] @ model.weight + model.bias))
        model.cap = float(torch.quantile(designer_ratio, quantile))
        return model

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        tensors = {"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias,
                   "cap": torch.tensor(self.cap, dtype=torch.float64)}
        write_atomically(Path(path), lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                                                           metadata={k: str(v) for k, v in metadata.items()}))

    @staticmethod
    def fitted_to(path: Path) -> str | None:
        """The weights digest (`core.weights_digest`) of the model the file was fitted to; None for a file from
        before 2026-12-06, which does not say."""
        try:
            with safe_open(str(path), framework="pt") as f:
                return (f.metadata() or {}).get("weights")
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable acceptance file ({exc})") from None

    @classmethod
    def load(cls, path: Path) -> "Acceptance":
        try:
            with safe_open(str(path), framework="pt") as f:
                t = {k: f.get_tensor(k) for k in ("mean", "scale", "weight", "bias", "cap")}
        except Exception as exc:  # a damaged file or one that is not an acceptance: say which
            raise CheckpointError(f"{path}: not a readable acceptance file ({exc})") from None
        n = features([Chem.MolFromSmiles("C")]).shape[1]
        if t["mean"].shape[:1] != (n,):
            raise CheckpointError(f"{path}: fitted on {tuple(t['mean'].shape)} features; this version of diffsolve "
                                  f"computes {n} (refit it with fit_acceptance)")
        shapes = {"mean": (n,), "scale": (n,), "weight": (2 * n,), "bias": (), "cap": ()}
        wrong = [f"{k} {tuple(t[k].shape)} (expected {shape})" for k, shape in shapes.items() if t[k].shape != shape]
        wrong += [f"{k} has dtype {t[k].dtype}, expected floating point" for k in shapes
                  if not t[k].dtype.is_floating_point]
        wrong += [f"{k} holds inf or NaN" for k in shapes if not wrong and not torch.isfinite(t[k]).all()]
        wrong += [f"{k} must be positive" for k in ("scale", "cap") if not wrong and not (t[k] > 0).all()]
        if wrong:
            raise CheckpointError(f"{path}: not a usable acceptance: {'; '.join(wrong)} (refit it with "
                                  "fit_acceptance)")
        t = {k: v.double() for k, v in t.items()}
        return cls(t["mean"], t["scale"], t["weight"], t["bias"], float(t["cap"]))
