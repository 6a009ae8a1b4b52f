"""The dask graph of the streaming seasonal reduction (kernels: :mod:`._kernels`).

Each reduction block is a linear chain of folds over the loaded day blocks, so the time
stack is never held (see :func:`stream_reduce`), and a time block's load waits until the
block :data:`LOAD_AHEAD` before it is folded, so loads never run far ahead of the folds
(see :func:`_bound_loads`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask._task_spec import Task, TaskRef, convert_legacy_graph
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from ._kernels import STREAMABLE, reduce_block, stream_fold, stream_take

__all__ = ["FOLD_PRIORITY", "LOAD_AHEAD", "seasonal_planes", "stream_reduce"]


#: dask priority of the streaming reduction's tasks (and of the load's splits into
#: reduction blocks): above the loads' default 0. Only a hint: dask 2025.7 drops the
#: annotations of an array graph it fuses (the default), so on the scheduler every task
#: has priority 0; :data:`LOAD_AHEAD` is what bounds the loads
FOLD_PRIORITY = 10

#: how many time blocks may be loaded ahead of the last one every chain has folded:
#: time block ``t``'s loads wait for the folds of block ``t - LOAD_AHEAD``. Dask's
#: priorities alone do not bound this (array graphs lose their annotations when dask
#: fuses them, and a free thread takes any ready load): measured, 2 threads ran up to 6
#: days ahead (234 of the 313 MiB a 3200 px task held at its peak). 3 = 2 load threads
#: kept busy + 1 day of slack for a slow (two-scene, less cloudy) day; a smaller bound
#: leaves a thread idle whenever the day before is slower than the day being loaded.
LOAD_AHEAD = 3


def seasonal_planes(
    data: da.Array,
    *,
    chunks: tuple[int, int],
    group_index: np.ndarray,
    n_groups: int,
    statistics: tuple[str, ...],
    min_clear: int,
    blocks: np.ndarray | None = None,
) -> list[da.Array]:
    """``(t, y, x)`` NDVI -> one float32 ``(y, x)`` plane per (season, statistic), group-major:
    streamed when every statistic has a running form (:func:`stream_reduce`), else each
    reduction block's observations reduced at once (median and std need them all).
    ``blocks`` (climatology): each observation's season instance; always streamed, the
    statistics being over the instances' means (:class:`~._kernels.SeasonClimate`)."""
    kwargs = dict(
        group_index=group_index, n_groups=n_groups, statistics=statistics, min_clear=min_clear
    )
    if blocks is not None or STREAMABLE.issuperset(statistics):
        return stream_reduce(data, chunks=chunks, blocks=blocks, **kwargs)
    data = data.rechunk({1: chunks[0], 2: chunks[1]})  # time blocks as they are
    # blockwise with the time index contracted and concatenate=False: the kernel gets each
    # spatial block's observations as a list (the stack is not copied)
    stack = da.blockwise(
        reduce_block,
        "byx",
        data,
        "tyx",
        new_axes={"b": n_groups * len(statistics)},
        concatenate=False,
        dtype=np.float32,
        **kwargs,
    )
    return [stack[i] for i in range(n_groups * len(statistics))]


def stream_reduce(
    data: da.Array,
    *,
    chunks: tuple[int, int],
    group_index: np.ndarray,
    n_groups: int,
    statistics: tuple[str, ...],
    min_clear: int,
    blocks: np.ndarray | None = None,
) -> list[da.Array]:
    """``(t, y, x)`` -> one ``(y, x)`` array per band, by folding the observations of each reduction
    block (``chunks``, carved out of the loaded blocks without copies) into running
    per-season accumulators, one time block after the other (a linear chain of tasks per
    reduction block). A day's NDVI is released as soon as every chain has folded it in,
    and a season's accumulator as soon as its last day is: the time stack is never held,
    which is what keeps a production tile-year within a small worker."""
    labels = np.asarray(group_index)
    t_edges = np.cumsum((0, *data.chunks[0]))
    day_labels = [labels[a:b] for a, b in zip(t_edges[:-1], t_edges[1:], strict=True)]
    day_blocks = (
        [None] * len(day_labels)
        if blocks is None
        else [np.asarray(blocks)[a:b] for a, b in zip(t_edges[:-1], t_edges[1:], strict=True)]
    )
    blocks = data.to_delayed(optimize_graph=False)
    # the time block whose fold completes each group (its last observation; block 0 for a
    # group without any): the group's planes are taken out right after that fold
    completes = [
        max((i for i, day in enumerate(day_labels) if (day == g).any()), default=0)
        for g in range(n_groups)
    ]
    # reduction blocks: (index of the loaded block, slice within it), per axis
    y_parts = [(i, ys) for i, n in enumerate(data.chunks[1]) for ys in _sub_slices(n, chunks[0])]
    x_parts = [(i, xs) for i, n in enumerate(data.chunks[2]) for xs in _sub_slices(n, chunks[1])]
    grid: list[list[list[da.Array]]] = []  # [y block][x block][band]
    folded: list[list[Any]] = [[] for _ in day_labels]  # [time block][chain]: its fold
    # folds first: a fold that can run runs before the next load, so a day's NDVI is
    # folded and dropped as soon as it is loaded
    with dask.annotate(priority=FOLD_PRIORITY):
        for iy, ys in y_parts:
            row = []
            for ix, xs in x_parts:
                state, states = None, []
                for it, day_block in enumerate(blocks[:, iy, ix]):
                    first = {"group_index": labels, "n_groups": n_groups} if it == 0 else {}
                    # pure=False: a fresh key per fold (each chain mutates its state)
                    state = dask.delayed(stream_fold, pure=False)(
                        state,
                        day_block,
                        day_labels[it],
                        statistics=statistics,
                        min_clear=min_clear,
                        region=(ys, xs),
                        blocks=day_blocks[it],
                        **first,
                    )
                    states.append(state)
                    folded[it].append(state)
                shape = (ys.stop - ys.start, xs.stop - xs.start)
                planes = []
                for g, done_at in enumerate(completes):
                    taken = dask.delayed(stream_take, pure=False)(
                        states[done_at],
                        g,
                        statistics=statistics,
                        min_clear=min_clear,
                        climate=blocks is not None,
                    )
                    planes += [taken[i] for i in range(len(statistics))]
                row.append([da.from_delayed(p, shape=shape, dtype=np.float32) for p in planes])
            grid.append(row)
        # one cheap task per time block, run once every chain has folded it
        gates = [dask.delayed(_folded, pure=False)(*states) for states in folded]
    n_bands = n_groups * len(statistics)
    bands = [da.block([[cell[b] for cell in row] for row in grid]) for b in range(n_bands)]
    return _bound_loads(bands, data, gates, LOAD_AHEAD)


def _folded(*states: Any) -> None:
    """A time block is folded into every chain (the value is not used)."""
    return None


def _after(gate: None, value: Any) -> Any:
    """``value``, computed only once ``gate`` is (a load made to wait for a fold)."""
    return value


class _GatedLoad(Task):
    """A load made to wait for a gate; never fused with the gate (the fused task would
    hold the gate's fold states until the load ran)."""

    __slots__ = ()

    @property
    def block_fusion(self) -> bool:
        return True


@dataclass(frozen=True)
class _PriorityOf:
    """A layer's ``priority`` annotation as a function of the key (0: not annotated)."""

    priorities: Mapping[Any, Any]

    def __call__(self, key: Any) -> Any:
        return self.priorities.get(key, 0)


def _bound_loads(
    bands: list[da.Array], data: da.Array, gates: list[Any], ahead: int
) -> list[da.Array]:
    """``bands`` with every task that only time block ``t`` of ``data`` needs and that
    needs nothing itself (its loads: one ``_day_block`` per load block with the direct
    loader) made to wait for ``gates[t - ahead]`` (time block ``t - ahead`` folded by
    every chain). The loaded blocks waiting to be folded are then at most ``ahead`` (plus
    those being loaded), whatever the scheduler prefers.

    The folds depend on the loads and the loads on earlier folds, so the graph is one
    layer (the layers of ``data`` span every time block: as layers they would form a
    cycle); its priority annotations are kept key by key."""
    n_t = len(data.chunks[0])
    if n_t <= ahead or not bands:
        return bands
    gates = gates[: n_t - ahead]  # the last blocks' folds gate no load
    hlg = HighLevelGraph.merge(*(b.dask for b in bands), *(g.dask for g in gates))
    priorities: dict[Any, Any] = {}
    for layer in hlg.layers.values():
        value = (layer.annotations or {}).get("priority")
        if value is not None:
            priorities.update((k, value(k) if callable(value) else value) for k in layer)
    dsk = convert_legacy_graph(dict(hlg))
    roots = _roots_by_time_block(dsk, data)
    for t in range(ahead, n_t):
        gate = gates[t - ahead].key
        for key in roots[t]:
            node = dsk[key]
            if isinstance(node, Task):  # a constant (a DataNode) is not loaded
                dsk[key] = _GatedLoad(key, _after, TaskRef(gate), node)
    layer = MaterializedLayer(dsk, annotations={"priority": _PriorityOf(priorities)})
    return [
        da.Array(HighLevelGraph({b.name: layer}, {b.name: set()}), b.name, b.chunks, meta=b._meta)
        for b in bands
    ]


def _roots_by_time_block(dsk: Mapping[Any, Any], data: da.Array) -> list[set[Any]]:
    """Per time block of ``data``: the tasks of ``dsk`` without dependencies that only
    this block's keys depend on (a task that several time blocks need is in none)."""
    n_t, n_y, n_x = (len(c) for c in data.chunks)
    owner: dict[Any, int] = {}  # root -> its time block, -1: shared
    for t in range(n_t):
        seen: set[Any] = set()
        todo = [(data.name, t, iy, ix) for iy in range(n_y) for ix in range(n_x)]
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            node = dsk.get(key)
            if node is None:  # computed elsewhere (a future): nothing to load here
                continue
            deps = node.dependencies
            if deps:
                todo.extend(deps)
            else:
                owner[key] = t if owner.get(key, t) == t else -1
    roots: list[set[Any]] = [set() for _ in range(n_t)]
    for key, t in owner.items():
        if t >= 0:
            roots[t].add(key)
    return roots


def _sub_slices(size: int, step: int) -> list[slice]:
    """``[0, size)`` cut into pieces of ``step`` (-1: one piece)."""
    step = size if step == -1 else max(1, step)
    return [slice(a, min(a + step, size)) for a in range(0, size, step)]
