"""The deterministic world: hash noise, land cover, surface reflectance, clouds, shadows
and snow per date (pure numpy, reproducible from the seed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ._encodings import Condition, LandCover
from ._spec import ArchiveSpec

# --- deterministic noise -----------------------------------------------------------------------

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# Standard deviation of the unit-weight value noise below (smoothstep bilinear interpolation of
# uniform[-1, 1] lattice values): sqrt(1/3) * E[(1-s)^2 + s^2] with s = smoothstep(t), t ~ U(0, 1)
# (= sqrt(1/3) * 26/35); used to normalise fractal fields.
_VALUE_NOISE_STD = math.sqrt(1.0 / 3.0) * 26.0 / 35.0


def _key(*parts: Any) -> np.uint64:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _hash_uniform(key: np.uint64, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per (row, col) integer pair; shape (len(rows), len(cols))."""
    with np.errstate(over="ignore"):
        r = _mix(rows.astype(np.int64).astype(np.uint64) * _C1 + key)
        c = cols.astype(np.int64).astype(np.uint64) * _C2
        x = _mix(r[:, None] ^ c[None, :])
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _axis(idx: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    f = (idx.astype(np.float64) + 0.5) / cell
    i = np.floor(f)
    t = f - i
    return i.astype(np.int64), t * t * (3.0 - 2.0 * t)


def _value_noise(key: np.uint64, rows: np.ndarray, cols: np.ndarray, cell: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] at global pixel indices (separable bilinear, smoothstep)."""
    iy, sy = _axis(rows, cell)
    ix, sx = _axis(cols, cell)
    ly = np.arange(iy.min(), iy.max() + 2)
    lx = np.arange(ix.min(), ix.max() + 2)
    lat = _hash_uniform(key, ly, lx) * 2.0 - 1.0
    jx = ix - lx[0]
    a = lat[:, jx] * (1.0 - sx) + lat[:, jx + 1] * sx
    jy = iy - ly[0]
    return a[jy] * (1.0 - sy)[:, None] + a[jy + 1] * sy[:, None]


def _fractal(
    key: tuple[Any, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    octaves: Sequence[tuple[int, float]],
) -> np.ndarray:
    """Sum of value-noise octaves (cell px, weight), normalised to roughly unit variance."""
    out = np.zeros((rows.size, cols.size))
    for i, (cell, weight) in enumerate(octaves):
        out += weight * _value_noise(_key(*key, i), rows, cols, cell)
    norm = _VALUE_NOISE_STD * math.sqrt(sum(w * w for _, w in octaves))
    return out / norm


# --- surface & atmosphere model ----------------------------------------------------------------

# per class: (mean NDVI, seasonal amplitude, day of year of the NDVI peak, base red reflectance)
# southern hemisphere: winter crops and pastures green up in late winter / spring.
_CLASS_PARAMS: dict[LandCover, tuple[float, float, float, float]] = {
    LandCover.WATER: (-0.30, 0.05, 30.0, 0.035),
    LandCover.FOREST: (0.72, 0.05, 30.0, 0.030),
    LandCover.CROP: (0.42, 0.30, 265.0, 0.045),
    LandCover.GRASSLAND: (0.45, 0.18, 250.0, 0.055),
    LandCover.BARE_URBAN: (0.10, 0.03, 0.0, 0.140),
}
_CLOUD_RED, _CLOUD_NIR = 0.42, 0.45
_SNOW_RED, _SNOW_NIR = 0.78, 0.72
_SHADOW_FACTOR = 0.35
_SNOW_PEAK_DOY = 215.0


@dataclass(frozen=True)
class _Static:
    landcover: np.ndarray  # uint8 LandCover
    elevation: np.ndarray  # ~N(0, 1)
    ndvi_offset: np.ndarray  # fixed per-pixel NDVI perturbation
    red_factor: np.ndarray  # fixed per-pixel red multiplier


@dataclass(frozen=True)
class _DateFields:
    red: np.ndarray  # float64 top-of-stack reflectance (before quantisation)
    nir: np.ndarray
    condition: np.ndarray  # uint8 Condition (never NODATA here)
    water: np.ndarray  # bool


def _static_fields(seed: int, rows: np.ndarray, cols: np.ndarray) -> _Static:
    elev = _fractal((seed, "elevation"), rows, cols, ((96, 1.0), (32, 0.5), (12, 0.25)))
    moist = _fractal((seed, "moisture"), rows, cols, ((48, 1.0), (16, 0.45)))
    lc = np.full(elev.shape, LandCover.GRASSLAND, dtype=np.uint8)
    lc[moist > 0.35] = LandCover.CROP
    lc[moist < -0.9] = LandCover.BARE_URBAN
    lc[elev > 0.55] = LandCover.FOREST
    lc[elev < -1.4] = LandCover.WATER
    u1 = _hash_uniform(_key(seed, "ndvi_offset"), rows, cols)
    u2 = _hash_uniform(_key(seed, "red_factor"), rows, cols)
    return _Static(lc, elev, 0.08 * (u1 - 0.5), 1.0 + 0.3 * (u2 - 0.5))


def _date_params(seed: int, cloudiness: float, day: dt.date) -> dict[str, float]:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, day.toordinal(), 7])
    frac = min(0.9, cloudiness * float(rng.exponential(1.0)))
    cirrus = float(rng.random()) < 0.35
    return {
        "cloud_fraction": frac,
        "shadow_dx": -float(rng.integers(6, 15)),  # morning sun from the north-east:
        "shadow_dy": float(rng.integers(5, 13)),  # shadows fall to the south-west
        "cirrus_fraction": 0.15 if cirrus else 0.0,
    }


def _threshold(fraction: float) -> float:
    if fraction <= 0.0:
        return math.inf
    return NormalDist().inv_cdf(1.0 - fraction)


def _in_window(rows: np.ndarray, cols: np.ndarray, r0: int, c0: int, r1: int, c1: int):
    """Boolean (rows x cols) grid: inside rows [r0, r1) and cols [c0, c1)."""
    return ((rows >= r0) & (rows < r1))[:, None] & ((cols >= c0) & (cols < c1))[None, :]


def _date_fields(
    spec: ArchiveSpec, day: dt.date, rows: np.ndarray, cols: np.ndarray, static: _Static
) -> _DateFields:
    seed, doy = spec.seed, day.timetuple().tm_yday
    p = _date_params(seed, spec.cloudiness, day)
    lc = static.landcover
    water = lc == LandCover.WATER

    # surface NDVI and reflectance
    ndvi = np.zeros(lc.shape)
    base_red = np.zeros(lc.shape)
    peak = np.zeros(lc.shape)
    for cls_, (a, b, phase, red0) in _CLASS_PARAMS.items():
        sel = lc == cls_
        season = a + b * math.cos(2.0 * math.pi * (doy - phase) / 365.25)
        ndvi[sel] = season
        base_red[sel] = red0
        peak[sel] = a + b
    jitter = _hash_uniform(_key(seed, "sensor", day.toordinal()), rows, cols) - 0.5
    ndvi = ndvi + static.ndvi_offset + 0.02 * jitter
    for first, last, r0, c0, r1, c1, delta in spec.droughts:
        if first <= day <= last:
            ndvi = ndvi - delta * _in_window(rows, cols, r0, c0, r1, c1)
    ndvi = np.clip(ndvi, -0.6, 0.92)
    if spec.ndvi_gain != (1.0, 0.0):
        ndvi = np.clip(spec.ndvi_gain[0] * ndvi + spec.ndvi_gain[1], -0.6, 0.95)
    red = base_red * static.red_factor * (1.0 + 1.2 * np.maximum(peak - ndvi, 0.0))
    nir = red * (1.0 + ndvi) / (1.0 - ndvi)

    cond = np.full(lc.shape, Condition.CLEAR_LAND, dtype=np.uint8)
    cond[water] = Condition.WATER

    # snow on high ground in winter, patchy, never on water
    reach = 1.15 + 0.025 * abs(doy - _SNOW_PEAK_DOY)
    if reach < 3.5:
        patch = _fractal((seed, "snow", day.toordinal()), rows, cols, ((24, 1.0),))
        snow = (static.elevation + 0.25 * patch > reach) & ~water
        cond[snow] = Condition.SNOW
        red = np.where(snow, _SNOW_RED + 0.04 * jitter, red)
        nir = np.where(snow, _SNOW_NIR + 0.04 * jitter, nir)

    # clouds: one smooth field per date; level sets give core, dilation ring and medium fringe
    octaves = ((40, 1.0), (14, 0.4))
    t_high = _threshold(p["cloud_fraction"])
    ckey = (seed, "cloud", day.toordinal())
    if math.isfinite(t_high):
        cloud = _fractal(ckey, rows, cols, octaves)
        shifted = _fractal(ckey, rows - int(p["shadow_dy"]), cols - int(p["shadow_dx"]), octaves)
        shadow = shifted > t_high - 0.15
        cond[shadow] = Condition.SHADOW
    else:
        cloud = None

    if p["cirrus_fraction"] > 0:
        cirrus_f = _fractal((seed, "cirrus", day.toordinal()), rows, cols, ((120, 1.0), (30, 0.3)))
        cirrus = cirrus_f > _threshold(p["cirrus_fraction"])
        cirrus &= cond != Condition.SHADOW
        cond[cirrus] = Condition.CIRRUS

    if cloud is not None:
        cond[cloud > t_high - 0.5] = Condition.CLOUD_MEDIUM
        cond[cloud > t_high - 0.15] = Condition.CLOUD_DILATED_RING
        cond[cloud > t_high] = Condition.CLOUD_HIGH
    for first, last, r0, c0, r1, c1 in spec.overcast:
        if first <= day <= last:
            overcast = _in_window(rows, cols, r0, c0, r1, c1)
            cond[overcast] = Condition.CLOUD_HIGH
            if cloud is None:
                cloud = np.full(lc.shape, -np.inf)
                t_high = 0.0
            cloud = np.where(overcast, np.maximum(cloud, t_high + 0.3), cloud)

    # atmospheric effects follow the final condition
    sh = cond == Condition.SHADOW
    red = np.where(sh, red * _SHADOW_FACTOR, red)
    nir = np.where(sh, nir * _SHADOW_FACTOR, nir)
    ci = cond == Condition.CIRRUS
    red = np.where(ci, red + 0.03, red)
    nir = np.where(ci, nir + 0.025, nir)
    if cloud is not None:
        alpha = np.zeros(lc.shape)
        alpha = np.where(cond == Condition.CLOUD_MEDIUM, 0.25 + 0.1 * jitter, alpha)
        alpha = np.where(cond == Condition.CLOUD_DILATED_RING, 0.12, alpha)
        alpha = np.where(
            cond == Condition.CLOUD_HIGH,
            0.6 + 0.4 * np.clip((cloud - t_high) / 0.6, 0.0, 1.0),
            alpha,
        )
        red = (1.0 - alpha) * red + alpha * (_CLOUD_RED + 0.05 * jitter)
        nir = (1.0 - alpha) * nir + alpha * (_CLOUD_NIR + 0.05 * jitter)
    return _DateFields(red, nir, cond, water)
