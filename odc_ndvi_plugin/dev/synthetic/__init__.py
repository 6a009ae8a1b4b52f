"""Deterministic synthetic Landsat archive: scenes, product definitions and ground truth.

The generator writes an archive of Landsat-like scenes (one Cloud Optimised GeoTIFF per band and
an EO3 dataset document per scene) for one of two input flavours:

``usgs_c2``
    USGS Collection 2 Level-2 surface reflectance, product ``ls_c2l2_sr``: ``red`` and ``nir08``
    as uint16 DNs (reflectance = DN * 0.0000275 - 0.2, DN 0 = nodata) and the real C2 ``qa_pixel``
    bit layout (nodata = 1).
``dea_ard``
    Geoscience Australia ARD Collection 3, product ``ga_ls_ard_3``: ``nbart_red`` and ``nbart_nir``
    as int16 (reflectance = DN * 0.0001, nodata -999) and the ``oa_fmask`` enumeration
    (0 nodata, 1 valid, 2 cloud, 3 shadow, 4 snow, 5 water).

Everything is a pure function of the :class:`ArchiveSpec` (seed included). Surface and cloud
fields are evaluated point-wise from global pixel indices with integer hashing and value noise
(no transcendental functions per pixel), so any window of the grid -- a scene, an odc-stats tile,
the whole region -- gets bit-identical values. :meth:`Archive.truth` uses that to regenerate,
for any output :class:`~odc.geo.geobox.GeoBox` aligned to the archive grid, the stored
reflectances and a per-pixel :class:`Condition` code for every scene, without reading the files
and without any plugin code.

Scene layout: ``n_paths`` adjacent WRS paths (west to east) are imaged on the *same* solar day
and overlap by a strip; each path can be cut into ``rows_per_path`` scenes (north to south) that
overlap too. Overlapping scenes of one day observe the same surface and the same clouds, so their
DNs are identical where both have data (unless a hard case below says otherwise); they differ only
in their (slanted, slightly ragged) footprints, outside of which every band is nodata. The
footprint polygon is the EO3 ``geometry``.

Opt-in hard cases (:class:`ArchiveSpec` fields; their defaults reproduce the archives written before
they existed, byte for byte): ``same_day_spread`` gives every scene its own red/NIR calibration,
so overlapping scenes of a day disagree where both are clear; ``band_nodata_fraction`` stores red
and/or NIR as nodata at some pixels whose mask value is unchanged (often clear);
``extra_dates`` adds solar dates, e.g. the first of a month, whose UTC date (the evening before)
falls in the previous month; ``simultaneous_scenes`` gives all scenes of a day one centre time, so
only the dataset id orders them.

With ``crs`` equal to the tiling CRS (EPSG:3577, the default) scenes are windows of the tiling
grid and the truth is exact. With a UTM ``crs`` (e.g. ``"EPSG:32755"``) scenes are on a UTM grid
covering the Albers region; truth on an Albers geobox is then a nearest-neighbour approximation.

Modules, each importing only those before it: :mod:`._encodings` (flavours, conditions, QA
and reflectance encodings), :mod:`._spec` (:class:`ArchiveSpec`), :mod:`._fields` (the
deterministic world per date), :mod:`._layout` (scene strips, names, files), :mod:`._truth`
(:class:`Truth`, :class:`Archive`), :mod:`._writers` (COGs, EO3 documents, plan/load/generate)
and :mod:`._command` (``odc-ndvi synth``).
"""

from __future__ import annotations

from ._command import synth_command
from ._encodings import (
    _FLAVOUR_INFO as _FLAVOUR_INFO,
)
from ._encodings import (
    DATASET_SCHEMA,
    DEFAULT_ANCHOR,
    FLAVOURS,
    FMASK_BY_CONDITION,
    MEASUREMENTS,
    PRODUCT_NAMES,
    QA_PIXEL_BY_CONDITION,
    SPEC_FILENAME,
    TILE_CRS,
    Condition,
    Flavour,
    LandCover,
    ProgressCallback,
    decode,
    encode_fmask,
    encode_qa_pixel,
    product_definition_path,
)
from ._encodings import (
    _encode_reflectance as _encode_reflectance,
)
from ._layout import Scene
from ._spec import ArchiveSpec
from ._truth import Archive, DayTruth, SceneTruth, Truth
from ._writers import generate_archive, load_archive, plan_archive

__all__ = [
    "DATASET_SCHEMA",
    "DEFAULT_ANCHOR",
    "SPEC_FILENAME",
    "TILE_CRS",
    "Archive",
    "ArchiveSpec",
    "Condition",
    "DayTruth",
    "FMASK_BY_CONDITION",
    "FLAVOURS",
    "Flavour",
    "LandCover",
    "MEASUREMENTS",
    "PRODUCT_NAMES",
    "ProgressCallback",
    "QA_PIXEL_BY_CONDITION",
    "Scene",
    "SceneTruth",
    "Truth",
    "decode",
    "encode_fmask",
    "encode_qa_pixel",
    "generate_archive",
    "load_archive",
    "plan_archive",
    "product_definition_path",
    "synth_command",
]
