"""Writing an archive: COGs, EO3 dataset documents, the product definition's copy;
planning and loading a written one."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from odc.geo.geobox import GeoBox

from ._encodings import (
    _FLAVOUR_INFO,
    DATASET_SCHEMA,
    SPEC_FILENAME,
    Condition,
    ProgressCallback,
    encode_fmask,
    encode_qa_pixel,
    product_definition_path,
)
from ._fields import _date_fields, _DateFields, _static_fields
from ._layout import Scene, _plan, _scene_dns
from ._spec import ArchiveSpec
from ._truth import Archive

# --- writing -----------------------------------------------------------------------------------


def plan_archive(spec: ArchiveSpec, out_dir: str | os.PathLike[str]) -> Archive:
    """The archive ``spec`` describes under ``out_dir``, without writing anything."""
    root = Path(out_dir)
    return Archive(
        spec=spec,
        root=root,
        scenes=_plan(spec, root),
        product_definition=root / f"{spec.product}.odc-product.yaml",
    )


def load_archive(out_dir: str | os.PathLike[str]) -> Archive:
    """Re-open an archive written by :func:`generate_archive` (reads its spec file only)."""
    root = Path(out_dir)
    doc = yaml.safe_load((root / SPEC_FILENAME).read_text())
    return plan_archive(ArchiveSpec.from_dict(doc["spec"]), root)


def _write_cog(path: Path, data: np.ndarray, gbox: GeoBox, nodata: float, resampling: str) -> None:
    import rasterio

    tmp = path.with_name(path.name + ".tmp")
    h, w = data.shape
    with rasterio.open(
        tmp,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=str(gbox.crs),
        transform=gbox.affine,
        nodata=nodata,
        compress="DEFLATE",
        predictor="YES",
        blocksize=256,
        overview_resampling=resampling,
    ) as ds:
        ds.write(data, 1)
    os.replace(tmp, path)


def _percent(mask: np.ndarray, valid_count: int) -> float:
    return round(100.0 * float(mask.sum()) / valid_count, 2) if valid_count else 0.0


def _dataset_doc(spec: ArchiveSpec, s: Scene, cond: np.ndarray) -> dict[str, Any]:
    valid = cond != Condition.NODATA
    n = int(valid.sum())
    cloudy = np.isin(
        cond,
        [
            Condition.CLOUD_HIGH,
            Condition.CLOUD_MEDIUM,
            Condition.CLOUD_DILATED_RING,
            Condition.CIRRUS,
        ],
    )
    a = s.geobox.affine
    h, w = s.geobox.shape
    props: dict[str, Any] = {
        "datetime": s.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "eo:platform": spec.platform,
        "eo:instrument": "OLI_TIRS",
        "eo:gsd": float(spec.resolution),
        "eo:cloud_cover": _percent(cloudy, n),
        "odc:file_format": "GeoTIFF",
        "odc:processing_datetime": (
            dt.datetime.combine(s.datetime.date() + dt.timedelta(days=16), dt.time(10, 0))
        ).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "odc:product_family": _FLAVOUR_INFO[spec.flavour].product_family,
        "odc:producer": _FLAVOUR_INFO[spec.flavour].producer,
        "odc:region_code": s.region_code,
        "landsat:wrs_path": s.wrs_path,
        "landsat:wrs_row": s.wrs_row,
    }
    if spec.flavour == "usgs_c2":
        props["landsat:collection_number"] = 2
        props["landsat:collection_category"] = "T1"
        props["landsat:landsat_product_id"] = s.name
    else:
        props["odc:dataset_version"] = "3.2.1"
        props["fmask:clear"] = _percent(cond == Condition.CLEAR_LAND, n)
        props["fmask:cloud"] = _percent(cloudy, n)
        props["fmask:cloud_shadow"] = _percent(cond == Condition.SHADOW, n)
        props["fmask:snow"] = _percent(cond == Condition.SNOW, n)
        props["fmask:water"] = _percent(cond == Condition.WATER, n)
    coords = [list(p) for p in s.footprint.exterior.coords]
    return {
        "$schema": DATASET_SCHEMA,
        "id": str(s.id),
        "label": s.name,
        "product": {"name": s.product},
        "crs": str(s.geobox.crs).lower(),
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "grids": {
            "default": {
                "shape": [h, w],
                "transform": [a.a, a.b, a.c, a.d, a.e, a.f, 0.0, 0.0, 1.0],
            }
        },
        "properties": props,
        "measurements": {m: {"path": f} for m, f in s.measurement_files},
        "lineage": {},
    }


class _DocDumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists, and digit-only strings always quoted."""


def _repr_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if value.isdigit() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _repr_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


def _repr_dict(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=False)


_DocDumper.add_representer(str, _repr_str)
_DocDumper.add_representer(list, _repr_list)
_DocDumper.add_representer(dict, _repr_dict)


def _dump_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_DocDumper, sort_keys=False, width=100)


def _write_scene(spec: ArchiveSpec, s: Scene, fields: _DateFields, sl: tuple[slice, slice]) -> None:
    info = _FLAVOUR_INFO[spec.flavour]
    fp = s.footprint_mask
    cond = np.where(fp, fields.condition[sl], Condition.NODATA).astype(np.uint8)
    r0, c0, h, w = s.window
    dn_red, dn_nir = _scene_dns(spec, s, fields, sl, np.arange(r0, r0 + h), np.arange(c0, c0 + w))
    red = np.where(fp, dn_red, info.nodata)
    nir = np.where(fp, dn_nir, info.nodata)
    if spec.flavour == "usgs_c2":
        mask = encode_qa_pixel(cond, fields.water[sl])
    else:
        mask = encode_fmask(cond)
    s.directory.mkdir(parents=True, exist_ok=True)
    files = dict(s.measurement_files)
    _write_cog(
        s.directory / files[info.red], red.astype(info.dtype), s.geobox, info.nodata, "average"
    )
    _write_cog(
        s.directory / files[info.nir], nir.astype(info.dtype), s.geobox, info.nodata, "average"
    )
    _write_cog(
        s.directory / files[info.mask],
        mask.astype(info.mask_dtype),
        s.geobox,
        info.mask_nodata,
        "nearest",
    )
    doc = _dataset_doc(spec, s, cond)
    tmp = s.dataset_yaml.with_name(s.dataset_yaml.name + ".tmp")
    tmp.write_text(_dump_yaml(doc))
    os.replace(tmp, s.dataset_yaml)  # the document last: its presence marks a complete scene


def generate_archive(
    spec: ArchiveSpec,
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
) -> Archive:
    """Write the archive (COGs, EO3 documents, product definition, spec) under ``out_dir``.

    Idempotent: scenes whose dataset document already exists are skipped. Refuses to write
    into a directory holding an archive of a different spec."""
    archive = plan_archive(spec, out_dir)
    root = archive.root
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / SPEC_FILENAME
    spec_doc = {"spec": spec.to_dict(), "product": spec.product}
    if spec_file.exists():
        old = yaml.safe_load(spec_file.read_text())
        if old.get("spec") != spec_doc["spec"]:
            raise ValueError(f"{root} holds a synthetic archive of a different spec")
    else:
        spec_file.write_text(yaml.safe_dump(spec_doc, sort_keys=False))
    if not archive.product_definition.exists():
        if spec.product_name:  # the flavour's definition under another name
            doc = yaml.safe_load(product_definition_path(spec.flavour).read_text())
            doc["name"] = spec.product
            doc.setdefault("metadata", {}).setdefault("product", {})["name"] = spec.product
            archive.product_definition.write_text(yaml.safe_dump(doc, sort_keys=False))
        else:
            shutil.copyfile(product_definition_path(spec.flavour), archive.product_definition)

    total, done = len(archive.scenes), 0
    by_day: dict[dt.date, list[Scene]] = {}
    for s in archive.scenes:
        by_day.setdefault(s.solar_date, []).append(s)
    for day, group in by_day.items():
        todo = [s for s in group if not s.dataset_yaml.exists()]
        todo_names = {s.name for s in todo}
        for s in group:
            if s.name not in todo_names:
                done += 1
                if progress:
                    progress(done, total, f"exists {s.name}")
        if not todo:
            continue
        r0 = min(s.window[0] for s in todo)
        c0 = min(s.window[1] for s in todo)
        r1 = max(s.window[0] + s.window[2] for s in todo)
        c1 = max(s.window[1] + s.window[3] for s in todo)
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        static = _static_fields(spec.seed, rows, cols)
        fields = _date_fields(spec, day, rows, cols, static)
        for s in todo:
            sr0, sc0, sh, sw = s.window
            sl = (slice(sr0 - r0, sr0 - r0 + sh), slice(sc0 - c0, sc0 - c0 + sw))
            _write_scene(spec, s, fields, sl)
            done += 1
            if progress:
                progress(done, total, f"wrote {s.name}")
    return archive
