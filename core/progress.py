"""Progress bars of the Python API's long calls (`progress=True`); the CLI draws its own with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


def progress_bar(show: bool, total: int, desc: str, unit: str, initial: int = 0, **tqdm_options) -> tqdm:
    """A tqdm bar on stderr (a widget in a notebook with ipywidgets) when `show`, else one that draws nothing.
    tqdm.auto is imported only when shown: in a notebook without ipywidgets its import alone warns.
    `tqdm_options` (such as `iterable`, `mininterval`) go to tqdm."""
    if show:
        from tqdm.auto import tqdm as bar
    else:
        from tqdm import tqdm as bar
    return bar(total=total, initial=initial, desc=desc, unit=unit, disable=not show, **tqdm_options)
