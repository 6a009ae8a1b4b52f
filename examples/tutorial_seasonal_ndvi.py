# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Seasonal NDVI: the dask tutorial's steps, then one call
#
# The *Go big with dask-gateway* tutorial computes a seasonal mean NDVI with `dc.load(...,
# dask_chunks=...)`, `make_mask`, a band ratio and `groupby("time.season").mean()`, first on a
# `LocalCluster`, then on a dask-gateway cluster. This notebook walks the same steps on a
# datacube you can run anywhere (an embedded PostgreSQL index and a synthetic year of USGS
# Collection 2 Level-2 scenes), then computes the same thing with
# `odc_ndvi_plugin.seasonal_ndvi`: the engine of the odc-stats plugin (its masking,
# reflectance scaling, solar-date seasons, statistics and loader), lazily, on the same
# cluster. At the end: timings, pictures, and what differs and why.
#
# Everything is chosen by the parameters below (environment variables, so a test or a
# scheduler can set them): `NDVI_NB_CLUSTER=local` (a `LocalCluster`) or `gateway` (a
# dask-gateway cluster found like `dask_gateway.Gateway()`: dask config or
# `DASK_GATEWAY__*`), the archive size, and where files go.

# %% tags=["parameters"]
import os
from pathlib import Path

CLUSTER = os.environ.get("NDVI_NB_CLUSTER", "local")  # "local" or "gateway"
SIZE = os.environ.get("NDVI_NB_SIZE", "demo")  # "demo": 2 x 2 tiles of 512 px; "small": of 128 px
WORKERS = int(os.environ.get("NDVI_NB_WORKERS", "2"))
REPEATS = int(os.environ.get("NDVI_NB_REPEATS", "2"))  # each compute is timed this often, best kept
WORKDIR = Path(os.environ.get("NDVI_NB_WORKDIR", ".work/notebook")).resolve()
FIGURES = Path(os.environ.get("NDVI_NB_FIGURES", str(WORKDIR / "figures"))).resolve()

# %% [markdown]
# ## 1. A datacube with a year of Landsat
#
# The tutorial uses its deployment's datacube. Here `open_index` uses *your* datacube if one
# is configured (`~/.datacube.conf`, `ODC_*` variables, ...) and otherwise starts an embedded
# PostgreSQL under the work directory. The archive is synthetic: 2 x 2 odc-stats tiles of
# USGS C2 L2 (`red`, `nir08`, `qa_pixel` with the real bit layout, reflectance =
# DN x 0.0000275 - 0.2), a scene every 16 days on two overlapping paths, with clouds,
# shadows, water and snow, from 1 December 2019.

# %%
import contextlib
import time

from odc_ndvi_plugin.dev.index import add_products, index_datasets, open_index
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive

TILE_PX = {"demo": 512, "small": 128}[SIZE]
spec = ArchiveSpec.demo(tile_px=TILE_PX, start="2019-12-01")
archive = generate_archive(spec, WORKDIR / f"archive-{SIZE}")

resources = contextlib.ExitStack()  # closed in the last cell
dcenv = resources.enter_context(open_index(WORKDIR, init=True))
add_products(dcenv, [archive.product_definition])
index_datasets(dcenv, archive.dataset_paths)
dc = resources.enter_context(dcenv.datacube(app="seasonal-ndvi-notebook"))
print(
    f"{spec.product}: {len(archive.scenes)} scenes on {len(archive.solar_dates)} days, "
    f"{spec.width_px} x {spec.height_px} px of {spec.resolution} m, index {dcenv.display_url}"
)

# %% [markdown]
# ## 2. A dask cluster
#
# As in the tutorial: a `LocalCluster`, or a cluster from the gateway (connect to an existing
# one if there is one, else create it; scale; wait for the workers). Nothing below depends on
# which it is.

# %%
from dask.distributed import Client, LocalCluster

created = False
if CLUSTER == "gateway":
    from dask_gateway import Gateway

    gateway = Gateway()
    clusters = gateway.list_clusters()
    if not clusters:
        print("Creating new cluster. Please wait for this to finish.")
        cluster = gateway.new_cluster()
        created = True
    else:
        print(f"An existing cluster was found. Connecting to: {clusters[0].name}")
        cluster = gateway.connect(clusters[0].name)
    cluster.scale(WORKERS)
    client = cluster.get_client()
else:
    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1")
    created = True
    client = Client(cluster)
client.wait_for_workers(n_workers=WORKERS)


def _warm_up() -> str:
    # import the readers once per worker, so neither timing below pays for it
    import datacube  # noqa: F401
    import rasterio  # noqa: F401

    import odc_ndvi_plugin.load  # noqa: F401

    return "ok"


client.run(_warm_up)
client

# %% [markdown]
# ## 3. The tutorial's code
#
# The tutorial's parameters with this datacube's names: the study area is a box of
# longitude/latitude around the centre of the data, the time range is one year as the
# tutorial sets it, the measurements are the three it uses in its last version.

# %%
from datacube.utils import masking

centre = archive.spec.region_geobox.extent.centroid.to_crs("EPSG:4326")
central_lon, central_lat = centre.coords[0]
buffer = 0.4 * spec.width_px * spec.resolution / 111_000  # degrees: most of the region
study_area_lat = (central_lat - buffer, central_lat + buffer)
study_area_lon = (central_lon - buffer, central_lon + buffer)

products = spec.product
set_time = ("2019-12-01", "2020-11-30")
nir, red, qa_band = "nir08", "red", "qa_pixel"
good_pixel_flags = {  # USGS Landsat
    "nodata": False,
    "cloud": "not_high_confidence",
    "cloud_shadow": "not_high_confidence",
    "water": "land_or_cloud",
}
qa_mask = good_pixel_flags
measurements = [qa_band, red, nir]
resampling = {qa_band: "nearest", "*": "average"}
set_crs = "EPSG:3577"
set_resolution = (-30, 30)
group_by = "solar_day"

timings: dict[str, float] = {}


def timed(compute, name):
    """Run ``compute()`` REPEATS times; keep the result and the best wall time."""
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        value = compute()
        runs.append(time.perf_counter() - t0)
    timings[name] = min(runs)
    print(f"{name}: " + ", ".join(f"{r:.1f} s" for r in runs))
    return value


t0 = time.perf_counter()
dataset = dc.load(
    product=products,
    x=study_area_lon,
    y=study_area_lat,
    time=set_time,
    measurements=measurements,
    resampling=resampling,
    output_crs=set_crs,
    resolution=set_resolution,
    dask_chunks={"time": 1, "x": 2048, "y": 2048},
    group_by=group_by,
)
# Identify pixels that are clear
cloud_free_mask = masking.make_mask(dataset[qa_band], **qa_mask)
# Apply the mask
cloud_free = dataset.where(cloud_free_mask)
# Calculate the components that make up the NDVI calculation
band_diff = cloud_free[nir] - cloud_free[red]
band_sum = cloud_free[nir] + cloud_free[red]
# Calculate NDVI
ndvi = band_diff / band_sum
ndvi_unweighted = ndvi.groupby("time.season").mean("time")  # Calculate the seasonal mean
timings["tutorial: build"] = time.perf_counter() - t0
print(f"dataset size (GiB) {dataset.nbytes / 2**30:.3f}, {dataset.sizes['time']} time steps")
ndvi_unweighted

# %%
actual_result = timed(ndvi_unweighted.compute, "tutorial: compute")

# %% [markdown]
# ## 4. The same with one call
#
# `seasonal_ndvi` takes `dc.load`'s keywords with `dc.load`'s meaning: below is the
# tutorial's call above with the function's name changed (`crs=` would be the CRS of
# `x`/`y`, as in `dc.load`; `group_by` is always `"solar_day"`; `dask_chunks` sets the
# blocks each tile is reduced in). Then what `dc.load` does not have: any `plugin_config`
# key of the odc-stats plugin (here the shipped year config's: `preset: usgs_c2`, the
# tutorial's flags, statistics `mean` and `count`, seasons DJF ... SON of a
# December-to-November year). It returns a lazy dataset with the bands a batch run writes,
# computed tile by tile on whatever cluster the client points at (a region larger than
# `tile_px`, 3200 px by default as odc-stats' production tiles, is cut into tiles and
# stitched lazily, so the graph grows with the number of tiles, not with their stack).

# %%
from odc_ndvi_plugin import plot_seasons, seasonal_ndvi

t0 = time.perf_counter()
ds = seasonal_ndvi(
    dc,
    product=products,
    x=study_area_lon,
    y=study_area_lat,
    time=set_time,
    measurements=measurements,
    resampling=resampling,
    output_crs=set_crs,
    resolution=set_resolution,
    dask_chunks={"time": 1, "x": 2048, "y": 2048},
    group_by=group_by,
    # beyond dc.load: the plugin's configuration
    preset="usgs_c2",
    season_mode="year",
    statistics=["mean", "count"],
)
timings["seasonal_ndvi: build"] = time.perf_counter() - t0
assert ds.odc.geobox == dataset.odc.geobox  # the same pixels as the tutorial's load
ds

# %%
result = timed(ds.compute, "seasonal_ndvi: compute")

# %% [markdown]
# ## 5. Pictures
#
# `plot_seasons` draws the four seasons on one NDVI scale with a shared colour bar, and the
# clear-observation counts on request. The same function draws the tutorial's result (a
# DataArray with a `season` dimension) on the same scale.

# %%
FIGURES.mkdir(parents=True, exist_ok=True)
fig = plot_seasons(result, counts=True)
fig.savefig(FIGURES / "seasonal_ndvi.png", dpi=90)

# %%
fig = plot_seasons(actual_result, title="The tutorial's seasonal mean (NDVI of raw DNs)")
fig.savefig(FIGURES / "tutorial_seasonal_mean.png", dpi=90)

# %% [markdown]
# ## 6. What differs, and why
#
# **Reflectance scaling.** The tutorial takes the ratio of raw digital numbers. USGS C2 stores
# reflectance as DN x 0.0000275 - 0.2, and the -0.2 offset does not cancel in
# (NIR - red) / (NIR + red): raw-DN NDVI is squeezed towards zero. The plugin scales each band
# with its product's `scale_factor`/`add_offset` first. Applying the same scaling to the
# tutorial's masked bands reproduces the plugin's numbers (below).

# %%
import numpy as np
import pandas as pd

measurement = dc.index.products.get_by_name(products).measurements
scale, offset = measurement[red]["scale_factor"], measurement[red]["add_offset"]
reflectance = cloud_free[[red, nir]] * scale + offset
ndvi_reflectance = (reflectance[nir] - reflectance[red]) / (reflectance[nir] + reflectance[red])
tutorial_scaled = ndvi_reflectance.groupby("time.season").mean("time").compute()
both = np.isfinite(actual_result) & np.isfinite(tutorial_scaled)
raw_bias = float(abs(actual_result - tutorial_scaled).where(both).median())
print(f"raw-DN NDVI vs reflectance NDVI: median |difference| {raw_bias:.3f}")

rows = []
for season in ("DJF", "MAM", "JJA", "SON"):
    ours = result[f"ndvi_mean_{season.lower()}"]
    theirs = tutorial_scaled.sel(season=season)
    n_theirs = ndvi_reflectance.notnull().groupby("time.season").sum("time").sel(season=season)
    agree = (
        np.isfinite(ours)
        & np.isfinite(theirs)
        & (n_theirs == result[f"clear_count_{season.lower()}"])
    )
    rows.append(
        {
            "season": season,
            "max |plugin - scaled tutorial| where both saw the same days": float(
                abs(ours - theirs).where(agree).max()
            ),
            "mean observations per pixel, tutorial": float(n_theirs.mean()),
            "mean clear_count, plugin": float(result[f"clear_count_{season.lower()}"].mean()),
        }
    )
differences = pd.DataFrame(rows).set_index("season")
differences

# %% [markdown]
# **Solar dates and a contiguous DJF.** Landsat passes over eastern Australia around 10:00
# local time, which is about 23:50 UTC the *previous* day: the scenes of the morning of
# 1 December 2019 are dated 30 November in UTC. `dc.load(time=("2019-12-01", ...))` selects
# by UTC, so the tutorial's DJF misses them (its DJF has fewer observations per pixel in the
# table above; MAM, JJA and SON agree). odc-stats, and so the plugin, bin scenes by *solar*
# date (UTC + the tile's longitude offset), and a `2019-12--P12M` window makes DJF
# December 2019 + January and February 2020: one contiguous summer. `groupby("time.season")`
# on a calendar year would pool January-February with the *following* December; the call
# refuses windows longer than 12 months and warns when a season is split:

# %%
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    seasonal_ndvi(dc, product=products, like=ds, time="2020", season_mode="year")
print("\n".join(str(w.message) for w in caught if "contiguous" in str(w.message)))
utc_dates = sorted({s.datetime.date() for s in archive.scenes})[:2]
print(f"first scenes: solar date {archive.solar_dates[0]}, UTC date {utc_dates[0]}")

# %% [markdown]
# **Nodata and outputs.** The tutorial masks with the QA band only; the plugin also treats a
# red or NIR pixel equal to the band's nodata (DN 0 in C2) as not clear, and a zero
# denominator as no observation rather than an infinite NDVI. On this archive the QA band
# already flags every such pixel (checked below), so this changes nothing here; on real
# scenes it keeps fill values out of the mean. The plugin's result is float32 NDVI with NaN
# nodata plus a uint16 `clear_count` per season (0 = no clear observation), the encoding of
# its COGs, with `nodata` attributes that describe them. The tutorial's result is NDVI only,
# NaN where a season had nothing, and it still carries the red band's attributes
# (`nodata: 0`, `scale_factor`, `add_offset`), which do not describe NDVI: an NDVI of 0 is
# a valid value, and the scaling was never applied.

# %%
leaks = int((((dataset[red] == 0) | (dataset[nir] == 0)) & cloud_free_mask).sum().compute())
print(f"clear-by-QA pixels whose red or NIR is nodata: {leaks}")
print({name: str(result[name].dtype) for name in ("ndvi_mean_djf", "clear_count_djf")})
print(f"tutorial result: {actual_result.dtype}, attributes {dict(actual_result.attrs)}")

# %% [markdown]
# ## 7. Timings, same data, same cluster
#
# Build = constructing the lazy graph (index query included); compute = running it on the
# cluster, best of `REPEATS` runs (the first run of either also warms the file cache for
# the other). The tutorial computes the seasonal mean; the call computes the mean and the
# clear count of every season, with reflectance scaling and solar-date seasons. On data this
# small, per-task overhead weighs more than the reading and arithmetic do.

# %%
import json

tasks = {
    "tutorial": len(ndvi_unweighted.__dask_graph__()),
    "seasonal_ndvi": len(ds.__dask_graph__()),
}
summary = pd.DataFrame(
    {
        "build (s)": [timings["tutorial: build"], timings["seasonal_ndvi: build"]],
        "compute (s)": [timings["tutorial: compute"], timings["seasonal_ndvi: compute"]],
        "tasks": [tasks["tutorial"], tasks["seasonal_ndvi"]],
    },
    index=["tutorial code", "seasonal_ndvi"],
)
record = {
    "cluster": CLUSTER,
    "size": SIZE,
    "timings": timings,
    "tasks": tasks,
    "raw_dn_median_bias": raw_bias,
    "differences": differences.reset_index().to_dict(orient="records"),
}
(FIGURES / "summary.json").write_text(json.dumps(record, indent=1))
summary.round(2)

# %% [markdown]
# ## 8. Clean up
#
# Close the client; shut the cluster down if this notebook created it (a gateway cluster
# outlives the notebook otherwise); stop the embedded index.

# %%
client.close()
if created and CLUSTER == "gateway":
    cluster.shutdown()
elif created:
    cluster.close()
resources.close()
