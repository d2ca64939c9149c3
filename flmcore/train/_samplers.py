"""Batch samplers for multi-dataset and pose-balanced training, DDP-aware.

* :class:`ATDPSampler` — ATF's *alternating training with decreasing proportions* (Lan, Hu,
  Cheng, eq. 2): every batch comes from one dataset, the per-epoch share of each dataset
  follows ``r_i(e) = r_i d_i^e`` (normalised), for any number of datasets.
* :class:`PoseBalancedSampler` — Rayhan et al. §3.2: Procrustes -> PCA pose bins
  (:func:`flmcore.pose.pose_bins`) and under/over-sampling to equal bin occupancy
  (:func:`flmcore.pose.balanced_indices`), re-drawn every epoch.

Both follow torch's sampler conventions (``set_epoch(e)``, ``len()``) and are DDP-aware: with
``num_replicas = R > 1`` (by default taken from an initialised :mod:`torch.distributed`), every
rank draws the same global plan from the seed and the epoch and keeps a disjoint shard of it, so
every rank runs the same number of steps on the same dataset at each step (as
:class:`~torch.nn.parallel.DistributedDataParallel` needs when branches differ per dataset).
"""
from __future__ import annotations

import numbers
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._validate import check_array, check_in, check_int

__all__ = ["ATDPSampler", "PoseBalancedSampler", "atdp_proportions", "atdp_batch_counts"]


def _dist_defaults(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    """``(num_replicas, rank)`` from the arguments or from an initialised torch.distributed."""
    if num_replicas is None or rank is None:
        try:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
        except ImportError:  # pragma: no cover
            ready = False
        if num_replicas is None:
            num_replicas = dist.get_world_size() if ready else 1
        if rank is None:
            rank = dist.get_rank() if ready else 0
    num_replicas = check_int(num_replicas, "num_replicas", min_value=1)
    rank = check_int(rank, "rank", min_value=0)
    if rank >= num_replicas:
        raise ValueError(f"rank must be < num_replicas = {num_replicas}, got {rank}")
    return num_replicas, rank


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_vector(x, name: str, n: int, *, allow_zero: bool) -> np.ndarray:
    arr = check_array(x, name, ndim=1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have one value per dataset ({n}), got {arr.shape[0]}")
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0, got {arr.tolist()}")
    if not allow_zero and (arr <= 0).any():
        raise ValueError(f"{name} must be > 0, got {arr.tolist()}")
    return arr


def atdp_proportions(ratios: Sequence[float], decay: Union[float, Sequence[float]], epoch: int,
                     target: int = 0) -> np.ndarray:
    """Share of each dataset in epoch ``epoch`` by ATF eq. 2: ``p_i ∝ r_i * d_i ** epoch``.

    Parameters
    ----------
    ratios : sequence of float, length n
        Initial proportions ``r_i`` (>= 0, not all zero), e.g. ``(1, 2)`` for main : auxiliary = 1 : 2.
    decay : float or sequence of float
        Per-epoch coefficients of descent ``d_i`` in (0, 1]; a scalar applies to every dataset
        but ``target`` (whose coefficient is 1, the paper's ``(alpha, beta, ..., 1)``).
    epoch : int
        Current epoch ``ce`` (0 = the initial ratios).
    target : int
        Index of the main dataset.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Proportions summing to 1.

    Examples
    --------
    >>> atdp_proportions([1.0, 2.0], 0.5, 1).tolist()
    [0.5, 0.5]
    """
    r, d, target = _check_ratios_decay(ratios, decay, target)
    epoch = check_int(epoch, "epoch", min_value=0)
    w = _weights(r, d, epoch)
    return w / w.sum()


def _check_ratios_decay(ratios, decay, target):
    r = check_array(ratios, "ratios", ndim=1)
    n = r.shape[0]
    if (r < 0).any():
        raise ValueError(f"ratios must be >= 0, got {r.tolist()}")
    if not (r > 0).any():
        raise ValueError(f"ratios must not be all zero, got {r.tolist()}")
    target = check_int(target, "target", min_value=0, max_value=n - 1)
    if r[target] <= 0:
        raise ValueError(f"the target dataset {target} must have a ratio > 0, got {r[target]}")
    if np.ndim(decay) == 0:
        dv = check_array(np.atleast_1d(decay), "decay", ndim=1)[0]
        d = np.full(n, dv)
        d[target] = 1.0
    else:
        d = check_array(decay, "decay", ndim=1)
        if d.shape[0] != n:
            raise ValueError(f"decay must be a scalar or have one value per dataset ({n}), got {d.shape[0]}")
    if ((d <= 0) | (d > 1)).any():
        raise ValueError(f"decay must be in (0, 1], got {d.tolist()}")
    return r, d, target


def _weights(r: np.ndarray, d: np.ndarray, epoch: int) -> np.ndarray:
    # r_i d_i^e in log space (no underflow to an all-zero vector for long schedules)
    with np.errstate(divide="ignore"):
        lw = np.log(r) + epoch * np.log(d)
    lw -= lw[np.isfinite(lw)].max()
    return np.exp(lw)


def _apportion(total: int, p: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``total * p`` to integers summing to ``total``."""
    raw = total * p
    base = np.floor(raw).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        order = np.lexsort((np.arange(len(p)), -(raw - base)))
        base[order[:rest]] += 1
    return base


def atdp_batch_counts(ratios, decay, epoch: int, *, target: int = 0, target_batches: Optional[int] = None,
                      batches_per_epoch: Optional[int] = None) -> np.ndarray:
    """Number of batches of each dataset in ``epoch`` (ATF eq. 2).

    Exactly one of ``target_batches`` (the target dataset's batch count per epoch, fixed; the
    others follow ``round(target_batches * p_i / p_target)``) and ``batches_per_epoch`` (a fixed
    total apportioned by largest remainders) is given.

    Examples
    --------
    >>> atdp_batch_counts([1, 2], 0.5, 0, target_batches=10).tolist()
    [10, 20]
    >>> atdp_batch_counts([1, 2], 0.5, 2, target_batches=10).tolist()
    [10, 5]
    """
    r, d, target = _check_ratios_decay(ratios, decay, target)
    epoch = check_int(epoch, "epoch", min_value=0)
    if (target_batches is None) == (batches_per_epoch is None):
        raise ValueError("give exactly one of target_batches and batches_per_epoch")
    w = _weights(r, d, epoch)
    if batches_per_epoch is not None:
        return _apportion(check_int(batches_per_epoch, "batches_per_epoch", min_value=1), w / w.sum())
    tb = check_int(target_batches, "target_batches", min_value=1)
    counts = np.floor(tb * w / w[target] + 0.5).astype(np.int64)
    counts[target] = tb
    return counts


class ATDPSampler:
    """Alternating training with decreasing proportions (ATF §III-B, eq. 2, Algorithm 1).

    Iterating yields ``(dataset_index, sample_indices)`` for every batch of the current epoch:
    each batch holds ``batch_size`` distinct indices into one dataset; the datasets alternate in
    a random order; dataset ``i`` contributes a share ``∝ r_i d_i^e`` of the batches of epoch
    ``e`` (eq. 2).  Every dataset is read as an endless stream of fresh permutations (the samples
    of a dataset are visited evenly across epochs whatever its share), so the plan of an epoch
    depends only on ``(seed, epoch)``: call :meth:`set_epoch` before iterating, as with torch's
    ``DistributedSampler``.

    Epoch length: by default the target dataset is seen once per epoch
    (``floor(N_target / (batch_size * num_replicas))`` target batches) and the others
    proportionally; ``batches_per_epoch`` fixes the total instead.

    Parameters
    ----------
    dataset_sizes : sequence of int
        Number of samples of each dataset (each >= ``batch_size * num_replicas`` when its ratio
        is > 0).
    ratios : sequence of float
        Initial proportions ``r_i`` (>= 0, not all zero).
    decay : float or sequence of float
        Coefficients of descent in (0, 1]; a scalar applies to every dataset but ``target``.
    batch_size : int
        Samples per batch (per rank).
    seed : int
        Seed of every random choice (identical on every rank).
    target : int
        Index of the main dataset (decay 1 when ``decay`` is a scalar; defines the epoch length).
    batches_per_epoch : int, optional
        Fixed number of (global) steps per epoch.
    num_replicas, rank : int, optional
        DDP shard; default from :mod:`torch.distributed` when initialised, else ``1, 0``.
        Each step's global batch of ``batch_size * num_replicas`` distinct indices is split into
        disjoint per-rank slices.

    Examples
    --------
    >>> s = ATDPSampler([100, 300], ratios=[1, 2], decay=0.5, batch_size=10, seed=0)
    >>> s.set_epoch(0); s.batch_counts().tolist()
    [10, 20]
    >>> s.set_epoch(1); s.batch_counts().tolist()
    [10, 10]
    >>> d, idx = next(iter(s)); idx.shape
    (10,)
    """

    def __init__(self, dataset_sizes: Sequence[int], ratios: Sequence[float], decay: Union[float, Sequence[float]],
                 batch_size: int, seed: int = 0, *, target: int = 0, batches_per_epoch: Optional[int] = None,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None):
        if isinstance(dataset_sizes, (str, bytes)) or not hasattr(dataset_sizes, "__len__"):
            raise TypeError(f"dataset_sizes must be a sequence of int, got {type(dataset_sizes).__name__}")
        sizes = [check_int(n, f"dataset_sizes[{i}]", min_value=0) for i, n in enumerate(dataset_sizes)]
        if not sizes:
            raise ValueError("dataset_sizes must name at least one dataset")
        self.ratios, self.decay, self.target = _check_ratios_decay(ratios, decay, target)
        if len(self.ratios) != len(sizes):
            raise ValueError(f"ratios must have one value per dataset ({len(sizes)}), got {len(self.ratios)}")
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self.seed = _check_seed(seed)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.global_batch = self.batch_size * self.num_replicas
        for i, n in enumerate(sizes):
            if n == 0:
                raise ValueError(f"dataset {i} is empty (dataset_sizes[{i}] = 0)")
            if self.ratios[i] > 0 and n < self.global_batch:
                raise ValueError(f"dataset {i} has {n} samples, fewer than batch_size * num_replicas = "
                                 f"{self.global_batch}")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.batches_per_epoch = (None if batches_per_epoch is None
                                  else check_int(batches_per_epoch, "batches_per_epoch", min_value=1))
        # global batches that fit in one permutation of each dataset (no index repeats within a step)
        self._per_perm = self.sizes // self.global_batch
        self.epoch = 0

    # ---------------------------------------------------------------- epoch plan
    @property
    def n_datasets(self) -> int:
        return len(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (0-based) whose plan the next iteration yields."""
        self.epoch = check_int(epoch, "epoch", min_value=0)

    def proportions(self, epoch: Optional[int] = None) -> np.ndarray:
        """Eq. 2 proportions of ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else check_int(epoch, "epoch", min_value=0)
        w = _weights(self.ratios, self.decay, e)
        return w / w.sum()

    def batch_counts(self, epoch: Optional[int] = None) -> np.ndarray:
        """Number of steps of each dataset in ``epoch`` (identical on every rank)."""
        e = self.epoch if epoch is None else check_int(epoch, "epoch", min_value=0)
        if self.batches_per_epoch is not None:
            return atdp_batch_counts(self.ratios, self.decay, e, target=self.target,
                                     batches_per_epoch=self.batches_per_epoch)
        return atdp_batch_counts(self.ratios, self.decay, e, target=self.target,
                                 target_batches=int(self._per_perm[self.target]))

    def __len__(self) -> int:
        return int(self.batch_counts().sum())

    def _offsets(self, epoch: int) -> np.ndarray:
        off = np.zeros(self.n_datasets, dtype=np.int64)
        for e in range(epoch):
            off += self.batch_counts(e)
        return off

    def _perm(self, dataset: int, cycle: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, dataset, cycle])
        return rng.permutation(int(self.sizes[dataset]))

    def plan(self, epoch: Optional[int] = None) -> List[Tuple[int, np.ndarray]]:
        """The global plan of an epoch: ``(dataset, indices of the global batch)`` per step."""
        e = self.epoch if epoch is None else check_int(epoch, "epoch", min_value=0)
        counts = self.batch_counts(e)
        order = np.repeat(np.arange(self.n_datasets), counts)
        np.random.default_rng([self.seed, 0, e]).shuffle(order)
        offsets = self._offsets(e)
        used = np.zeros(self.n_datasets, dtype=np.int64)
        cache = {}
        G = self.global_batch
        out = []
        for d in order.tolist():
            k = int(offsets[d] + used[d])  # global batch number in dataset d's stream
            used[d] += 1
            cycle, j = divmod(k, int(self._per_perm[d]))
            key = (d, cycle)
            if key not in cache:
                cache[key] = self._perm(d, cycle)
            out.append((d, cache[key][j * G:(j + 1) * G]))
        return out

    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]:
        r, B = self.rank, self.batch_size
        for d, idx in self.plan():
            yield d, idx[r * B:(r + 1) * B].copy()

    def __repr__(self) -> str:
        return (f"ATDPSampler(dataset_sizes={self.sizes.tolist()}, ratios={self.ratios.tolist()}, "
                f"decay={self.decay.tolist()}, batch_size={self.batch_size}, seed={self.seed}, "
                f"target={self.target}, num_replicas={self.num_replicas}, rank={self.rank})")


class PoseBalancedSampler:
    """Pose-balanced sample indices (Rayhan et al. §3.2), re-drawn every epoch, DDP-aware.

    The shapes are binned once with :func:`flmcore.pose.pose_bins` (generalised Procrustes,
    PCA, ``n_bins`` pose bins); each epoch draws
    :func:`flmcore.pose.balanced_indices` (``"undersample"``: every bin cut to the smallest
    bin's count; ``"oversample"``: every bin replicated up to the largest) with the generator
    seeded by ``(seed, epoch)``, shuffles them, and with ``num_replicas = R`` keeps the
    ``rank``-th of ``R`` disjoint interleaved slices (the plan is cut to a multiple of ``R``).
    Usable as ``DataLoader(..., sampler=PoseBalancedSampler(...))``.

    Parameters
    ----------
    shapes : array_like, shape (N, P, 2)
        Training shapes (NaN marks missing points where :mod:`flmcore.pose` supports it).
    n_bins : int
        Number of pose bins ``K`` (9 in the paper).
    mode : {"undersample", "oversample"}
    seed : int
    num_replicas, rank : int, optional
        DDP shard (default from :mod:`torch.distributed`).
    **bin_kwargs
        Passed to :func:`flmcore.pose.pose_bins`.

    Attributes
    ----------
    labels : numpy.ndarray (N,)
        Pose bin of every shape.
    bin_means : numpy.ndarray (K, P, 2)
    mean_of_means : numpy.ndarray (P, 2)
        The regression origin of Rayhan et al. §3.2 (in the Procrustes frame of
        :func:`flmcore.pose.pose_bins`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(1, 10, 2))
    >>> shapes = base + 0.05 * rng.normal(size=(60, 10, 2))
    >>> s = PoseBalancedSampler(shapes, n_bins=3, seed=0)
    >>> len(list(s)) == len(s)
    True
    """

    def __init__(self, shapes, n_bins: int = 9, mode: str = "undersample", seed: int = 0, *,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, **bin_kwargs):
        from .. import pose

        self.mode = check_in(mode, "mode", ("undersample", "oversample"))
        self.n_bins = check_int(n_bins, "n_bins", min_value=1)
        self.seed = _check_seed(seed)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        res = pose.pose_bins(shapes, n_bins=self.n_bins, **bin_kwargs)
        self.labels, self.bin_means, self.mean_of_means = _unpack_bins(res)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.n_samples = len(self.labels)
        if self.n_samples < self.num_replicas:
            raise ValueError(f"shapes holds {self.n_samples} samples, fewer than num_replicas = {self.num_replicas}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (0-based) whose draw the next iteration yields."""
        self.epoch = check_int(epoch, "epoch", min_value=0)

    def global_indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """All ranks' indices of an epoch, shuffled (length a multiple of ``num_replicas``)."""
        from .. import pose

        e = self.epoch if epoch is None else check_int(epoch, "epoch", min_value=0)
        rng = np.random.default_rng([self.seed, 2, e])
        idx = np.asarray(pose.balanced_indices(self.labels, mode=self.mode, rng=rng), dtype=np.int64)
        idx = idx[rng.permutation(len(idx))]
        n = (len(idx) // self.num_replicas) * self.num_replicas
        return idx[:n]

    def bin_counts(self, indices: Optional[np.ndarray] = None) -> np.ndarray:
        """Occupancy of each bin in ``indices`` (default: the whole training set)."""
        lab = self.labels if indices is None else self.labels[np.asarray(indices, dtype=np.int64)]
        return np.bincount(lab, minlength=self.n_bins)

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(self.global_indices()) // self.num_replicas


def _unpack_bins(res):
    """Accept the result of flmcore.pose.pose_bins as a tuple or an object with attributes."""
    if isinstance(res, tuple) and len(res) >= 3 and not hasattr(res, "labels"):
        return res[0], res[1], res[2]
    labels = getattr(res, "labels")
    means = getattr(res, "bin_means", None)
    mom = getattr(res, "mean_of_means", None)
    if mom is None:
        mom = getattr(res, "origin", None)
    return labels, means, mom
