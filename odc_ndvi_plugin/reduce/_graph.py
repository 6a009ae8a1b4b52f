"""The dask graph of the streaming seasonal reduction (kernels: :mod:`._kernels`).

Each reduction block is a linear chain of folds over the loaded day blocks, so the time
stack is never held (see :func:`stream_reduce`).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from ._kernels import STREAMABLE, reduce_block, stream_fold, stream_take

__all__ = ["FOLD_PRIORITY", "seasonal_planes", "stream_reduce"]


#: dask priority of the streaming reduction's tasks (and of the load's splits into
#: reduction blocks): above the loads' default 0
FOLD_PRIORITY = 10


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
    n_bands = n_groups * len(statistics)
    return [da.block([[cell[b] for cell in row] for row in grid]) for b in range(n_bands)]


def _sub_slices(size: int, step: int) -> list[slice]:
    """``[0, size)`` cut into pieces of ``step`` (-1: one piece)."""
    step = size if step == -1 else max(1, step)
    return [slice(a, min(a + step, size)) for a in range(0, size, step)]
