"""Seasonal NDVI reduction: pure numpy kernels (:mod:`._kernels`) and the dask graph that
streams them (:mod:`._graph`). Output dtypes and nodata are decided here."""

from ._graph import FOLD_PRIORITY, seasonal_planes, stream_reduce
from ._kernels import (
    CLIMATOLOGY_EXTRAS,
    CLIMATOLOGY_STATISTICS,
    COUNT_DTYPE,
    COUNT_NODATA,
    FLOAT_DTYPE,
    STATISTICS,
    STREAMABLE,
    GroupAccumulator,
    SeasonClimate,
    StreamState,
    anomaly_block,
    band_dtype_nodata,
    reduce_block,
    stream_finish,
    stream_fold,
    stream_start,
)

__all__ = [
    "CLIMATOLOGY_EXTRAS",
    "CLIMATOLOGY_STATISTICS",
    "COUNT_DTYPE",
    "COUNT_NODATA",
    "FLOAT_DTYPE",
    "FOLD_PRIORITY",
    "STATISTICS",
    "STREAMABLE",
    "GroupAccumulator",
    "SeasonClimate",
    "StreamState",
    "anomaly_block",
    "band_dtype_nodata",
    "reduce_block",
    "seasonal_planes",
    "stream_finish",
    "stream_fold",
    "stream_reduce",
    "stream_start",
]
