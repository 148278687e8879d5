"""Progress bars of the Python API's long calls (`progress=True`); the CLI draws its own with rich."""

from __future__ import annotations


def progress_bar(show: bool, total: int, desc: str, unit: str, initial: int = 0, **tqdm_options):
    """A tqdm bar on stderr (a widget in a notebook with ipywidgets) when `show`, else one that draws nothing.
    tqdm.auto is imported only when shown: in a notebook without ipywidgets its import alone warns.
    `tqdm_options` (such as `iterable`, `mininterval`) go to tqdm."""
    if show:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not show, **tqdm_options)
