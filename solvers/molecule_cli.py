"""`solve molecules`: verified molecules for a request, as SMILES, CSV, SDF or JSON."""

from __future__ import annotations

import json
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from ..core import CtrlC
from ..tasks.text import plural
from .cli_common import (DEVICE, SEED_RANGE, THREADS, app, check_image, check_writable, choice, error, interrupted,
                         load_task_model, rich_progress, usage_error, write_output)


MOLECULE_FORMATS = ("smi", "csv", "sdf", "json")


def window_option(what: str) -> Any:
    """A property window option: LO:HI text (read by `parse_window`)."""
    return typer.Option(None, metavar="LO:HI", help=f"{what} window.")


@app.command()
def molecules(
    num: int = typer.Option(10, "--num", "-n", min=1, help="How many distinct verified molecules to return."),
    contains: str = typer.Option(None, help="SMARTS substructure every molecule must contain."),
    scaffold: str = typer.Option(None, help="SMILES scaffold to decorate (kept as a substructure)."),
    logp: str = window_option("Crippen logP"),
    mw: str = window_option("Molecular weight (Da)"),
    qed: str = window_option("QED drug-likeness (0-1)"),
    tpsa: str = window_option("Topological polar surface area"),
    hbd: str = window_option("Hydrogen-bond donors (RDKit's Lipinski.NumHDonors, not the rule-of-5 NH + OH count)"),
    hba: str = window_option("Hydrogen-bond acceptors (RDKit's Lipinski.NumHAcceptors, not the rule-of-5 N + O "
                             "count)"),
    rings: str = window_option("Ring count"),
    heavy_atoms: str = window_option("Heavy-atom count"),
    max_ring_size: int = typer.Option(7, min=0, help="Largest ring allowed, in atoms (at least 3); the default "
                                                     "keeps to the training data (no macrocycles); 0 allows any size."),
    avoid: str = typer.Option(None, help="Structural-alert catalogs no molecule may match, comma-separated, from "
                                         "RDKit's FilterCatalog: PAINS (or PAINS_A/B/C), BRENK, NIH, ZINC, CHEMBL "
                                         "(or one ChEMBL set, e.g. CHEMBL_Glaxo), ALL; any case; e.g. --avoid "
                                         "pains,brenk."),
    budget: int = typer.Option(None, min=1, help="Most canvases to try (default 200 x num + 256)."),
    format: str = typer.Option(None, "--format", "-f", show_default=False,
                               help="smi, csv, sdf or json (one object per line); default: the --out suffix's "
                                    "(.smi, .csv, .sdf, .json/.jsonl), else smi."),
    out: Path = typer.Option(None, "--out", "-o", help="Write here instead of stdout (written whole at the end; "
                                                       "'-' is stdout)."),
    image: Path = typer.Option(None, help="Also draw the molecules as a grid with RDKit; the suffix picks the "
                                          "type (.png, .jpg, .webp, ...)."),
    model_only: bool = typer.Option(False, "--model-only", help="Stock sampler without chemistry guidance "
                                                                "(molecules are still verified)."),
    no_training_prior: bool = typer.Option(
        False, "--no-training-prior",
        help="Leave the prompt and the length to the model: more verified molecules per canvas, but shorter and "
             "less varied ones. By default a canvas without windows or a fragment to pin is prompted with the "
             "property bins and the scaffold of a random MOSES training molecule and given that molecule's length, "
             "so that the molecules follow the training distribution."),
    no_match_training: bool = typer.Option(
        False, "--no-match-training",
        help="Skip the training-likeness acceptance. By default, with the training prior, each verified molecule is "
             "kept with a probability that pulls the output toward the MOSES distribution (a classifier fitted to "
             "the checkpoint's own molecules; about half are kept)."),
    allow_known: bool = typer.Option(
        False, "--allow-known",
        help="Return molecules of the MOSES training set too. By default they are left out (a filter shipped with "
             "diffsolve that also drops about 1 % of novel ones)."),
    checkpoint: str = typer.Option(None, help="Checkpoint directory or hub id (default: the shipped model)."),
    seed: int = typer.Option(None, **SEED_RANGE, help="Seed (default: random; the summary on stderr says which)."),
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Design molecules that RDKit verifies against every requested condition.

    Property windows are inclusive LO:HI; either side may be left open (--mw 250: or --logp :3.5), and a count
    may be one number (--hbd 2 means 2:2).
    The model writes C, N, O, S, F, Cl and Br, without charges, isotopes or stereo: a --contains or --scaffold
    that needs anything else is refused before any work.

    Exit status: 0 all NUM found, 1 the budget ran out first (what was found is still written) or an output
    could not be written (the molecules then go to stdout), 2 bad request."""
    from .molecules import MoleculeDesigner, default_budget

    format = _molecule_format(format, out)
    texts = {"logp": logp, "mw": mw, "qed": qed, "tpsa": tpsa, "hbd": hbd, "hba": hba, "rings": rings,
             "heavy_atoms": heavy_atoms}
    request = _molecule_request(num, texts, contains, scaffold, max_ring_size, avoid)
    out = None if out is not None and str(out) == "-" else out
    check_writable(out, "--out")
    check_image(image, "molecules")
    if out is not None and image is not None and os.path.realpath(out) == os.path.realpath(image):
        usage_error(f"--out and --image both name {out}: the picture would replace the molecules")
    designer = load_task_model(checkpoint, "molecules", device, threads, lambda model: MoleculeDesigner(
        model, guided=not model_only, training_prior=not no_training_prior, match_training=not no_match_training,
        novel=not allow_known), results_on_stdout=out is None, check_header=MoleculeDesigner.check_checkpoint)
    budget = budget if budget is not None else default_budget(num)
    drawn_seed = seed if seed is not None else secrets.randbelow(2**31)
    result, stopped = _run_design(designer, num, request, drawn_seed, budget)
    names = sorted(set(request.windows) | {"logp", "mw", "qed"}, key=list(texts).index)
    written = True  # every output went where it was asked to
    if result.molecules or out is None:
        written = _write_molecules(result.molecules, names, format, out)
    else:  # an empty result does not replace what the file held
        print(f"no molecule found: {out} not written", file=sys.stderr)
    if image is not None and result.molecules:
        written &= _draw_molecules(result, names, image, request.substructures())
    elif image is not None:
        print(f"no molecule to draw: {image} not written", file=sys.stderr)
    summary = _design_summary(result, request, num, seed_given=seed is not None)
    if stopped:  # the molecules found are written all the same
        interrupted(summary + (f"; written to {out}" if out is not None and result.molecules and written else ""))
    print(summary, file=sys.stderr)
    raise typer.Exit(1 if result.exhausted or not written else 0)


def _run_design(designer, num: int, request, seed: int, budget: int):
    """(result, stopped): the design under a progress bar. Ctrl-C finishes the round of canvases under way and
    keeps its molecules (stopped=True); SIGTERM stops after the pass under way, without that round (a round takes
    tens of seconds on a CPU, longer than a scheduler waits before it kills); before any molecule exists either
    ends the command (exit 130)."""
    from ..tasks.molecule_request import UnlikelyRequestWarning
    from .molecules import DesignInterrupted

    result = None

    tried, passes = 0, designer.config.max_denoising_steps

    def on_round(canvases: int, count: int) -> None:
        nonlocal tried
        tried = canvases
        bar.update(task, completed=count, tried=f"{canvases}/{budget} canvases")
        if count < num and canvases < budget:  # a finished design is not an interrupted one
            ctrl_c.stop_if_asked()  # a round's molecules are kept only once its canvases have settled

    def on_pass(step: int) -> None:  # a round takes many seconds: its passes show it is under way
        bar.update(task, tried=f"{tried}/{budget} canvases done, the round under way at pass {step}/{passes}")
        ctrl_c.stop_if_terminated()

    try:
        with (rich_progress("designing", "{task.fields[tried]}") as bar, warnings.catch_warnings(),
              CtrlC("finishing the round of canvases under way",
                    "terminated: stopping after this pass, with the round's stopped canvases") as ctrl_c):
            warnings.simplefilter("ignore", UnlikelyRequestWarning)  # said before, in the CLI's words
            task = bar.add_task("molecules", total=num, tried="")
            result = designer.design(num, request, seed=seed, budget=budget, on_round=on_round, on_pass=on_pass)
    except DesignInterrupted as stop:  # the molecules found are kept
        return stop.result, True
    except KeyboardInterrupt:  # before the search began, or once it had ended (then its result is kept)
        if result is None:
            interrupted("no molecule designed yet")
        return result, True
    return result, False


def _molecule_request(num: int, windows: dict[str, str | None], contains: str | None, scaffold: str | None,
                      max_ring_size: int, avoid: str | None):
    """The request the options make, refused with exit 2 in the options' own names; warnings for unlikely ones."""
    from ..tasks.molecule_request import MoleculeRequest, RequestError, parse_window

    if 0 < max_ring_size < 3:
        usage_error(f"--max-ring-size must be 0 (rings of any size) or at least 3 (the smallest ring), got "
                    f"{max_ring_size}")
    try:
        parsed = {name: parse_window(text, name) for name, text in windows.items() if text is not None}
        request = MoleculeRequest.parse(parsed, contains=contains, scaffold=scaffold,
                                        max_ring_size=max_ring_size or None, avoid=avoid)
        request.check_count(num)
    except RequestError as exc:
        # The request's messages start with the Python argument ('heavy_atoms: ...'); name the option typed.
        head, colon, rest = f"{exc}".partition(": ")
        known = head in windows or head in ("contains", "scaffold", "avoid")
        usage_error(f"--{head.replace('_', '-')}: {rest}" if colon and known else f"{exc}")
    for message in request.unlikely():
        name, rest = message.split(":", 1)
        print(f"warning: --{name.replace('_', '-')}:{rest}", file=sys.stderr)
    return request


def _design_summary(result, request, num: int, seed_given: bool) -> str:
    """One line for stderr: how many were found, from how many canvases, what was left out, and the seed."""
    canvases = plural(result.canvases, "canvas", "canvases")
    return (f"{len(result)}/{num} verified molecules"
            + (f" (no {', '.join(request.avoid)} alert)" if request.avoid else "")
            + f" from {canvases} in {result.seconds:.1f} s"
            + (f"; left out {result.known} known and {result.atypical} atypical" if result.known or result.atypical
               else "")
            + (f"; budget exhausted ({canvases})" if result.exhausted else "")
            + (f"; {result.missed()}" if result.exhausted and result.rejected else "")
            + ("" if seed_given else f" (seed {result.seed}: --seed {result.seed} repeats this run)"))


def _molecule_format(format: str | None, out: Path | None) -> str:
    """--format, or the one --out's suffix names; a format that contradicts the suffix exits 2."""
    suffix = out.suffix.lower().lstrip(".") if out is not None and str(out) != "-" else ""
    implied = {"jsonl": "json"}.get(suffix, suffix) if suffix in (*MOLECULE_FORMATS, "jsonl") else None
    format = choice(format, "--format", MOLECULE_FORMATS) if format is not None else None
    if format is None and suffix and implied is None:
        usage_error(f"--out {out}: the suffix .{suffix} names no format; use .smi, .csv, .sdf or .json, or name "
                    "one with --format (the file is plain text either way, never compressed)")
    if format is not None and implied is not None and format != implied:
        usage_error(f"--out {out}: the suffix says {implied} but --format is {format}")
    return format or implied or "smi"


def _write_molecules(found, names: list[str], format: str, out: Path | None) -> bool:
    """All molecules in one go; a file is written to a temporary name and renamed, so it is never partial. If
    `out` cannot be written, they go to stdout; returns whether they went where they were asked to."""
    import io

    buffer = io.StringIO()
    if format == "smi":
        buffer.writelines(f"{m.smiles}\n" for m in found)
    elif format == "json":
        buffer.writelines(json.dumps(m.to_dict(names)) + "\n" for m in found)
    elif format == "csv":
        import csv

        writer = csv.DictWriter(buffer, fieldnames=["smiles", "verified", *names, "passes"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(m.to_dict(names) for m in found)
    else:
        from rdkit import Chem

        writer = Chem.SDWriter(buffer)
        for m in found:
            mol = Chem.Mol(m.mol)
            mol.SetProp("_Name", m.smiles)
            for key, value in m.to_dict(names).items():
                mol.SetProp(key, str(value))
            writer.write(mol)
        writer.close()
    text = buffer.getvalue()
    if out is not None and write_output(out, lambda tmp: tmp.write_text(text, encoding="utf-8"), fatal=False):
        return True
    if out is not None:  # the work is done: the molecules go to stdout rather than nowhere
        error(f"{'the molecule is' if len(found) == 1 else f'the {len(found)} molecules are'} printed on stdout "
              "instead")
    sys.stdout.write(buffer.getvalue())
    return out is None


def _draw_molecules(result, names: list[str], path: Path, highlight: list) -> bool:
    """A grid of the first molecules (at most MAX_DRAWN), each numbered as in the output and labelled with the
    properties `names`, the `highlight` substructures marked; .svg is drawn as vector graphics, other suffixes by
    PIL. Returns whether the file was written (a failure is said on stderr)."""
    from .molecules import MAX_DRAWN

    svg = path.suffix.lower() == ".svg"
    grid = result.draw(names, svg=svg, highlight=highlight)
    if not write_output(path, (lambda tmp: tmp.write_text(grid, encoding="utf-8")) if svg else grid.save, fatal=False):
        return False
    if len(result) > MAX_DRAWN:
        print(f"{path}: drew the first {MAX_DRAWN} of {len(result)} molecules", file=sys.stderr)
    return True
