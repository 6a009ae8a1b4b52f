"""Pictures of results: the RGBA preview band and PNG quicklooks of the seasons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

__all__ = ["NDVI_RANGE", "ndvi_rgba", "quicklook_png"]

#: NDVI values mapped onto the colour ramp (clipped outside)
NDVI_RANGE = (-0.2, 0.9)
_CMAP = "RdYlGn"


def _colourise(ndvi: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    lo, hi = NDVI_RANGE
    scaled = np.clip((ndvi - lo) / (hi - lo), 0, 1)
    rgba = (colormaps[_CMAP](np.nan_to_num(scaled)) * 255).round().astype(np.uint8)
    rgba[..., 3] = np.where(np.isnan(ndvi), 0, 255)
    return rgba


def ndvi_rgba(ndvi: xr.DataArray) -> xr.DataArray:
    """uint8 RGBA ``(y, x, band)`` rendering of an NDVI band; transparent where NaN."""
    data = ndvi.data
    if isinstance(data, da.Array):
        rgba = da.map_blocks(
            _colourise, data, new_axis=2, chunks=(*data.chunks, (4,)), dtype=np.uint8
        )
    else:
        rgba = _colourise(np.asarray(data))
    coords = {k: v for k, v in ndvi.coords.items() if set(v.dims) <= {"y", "x"}}
    coords["band"] = ["r", "g", "b", "a"]
    return xr.DataArray(rgba, dims=("y", "x", "band"), coords=coords, attrs={"nodata": None})


def quicklook_png(panels: Sequence[tuple[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """One PNG with a panel per (label, NDVI array), shared colour ramp and a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.6), squeeze=False)
    image = None
    for ax, (label, arr) in zip(axes[0], panels, strict=True):
        image = ax.imshow(arr, cmap=_CMAP, vmin=NDVI_RANGE[0], vmax=NDVI_RANGE[1])
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="NDVI")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
