"""ATDP (ATF eq. 2) and pose-balanced samplers: proportions across epochs and datasets, streams,
reproducibility, DDP shards, bad input."""
from collections import Counter

import numpy as np
import pytest

from flmcore.pose import pose_bins
from flmcore.train import ATDPSampler, PoseBalancedSampler, atdp_batch_counts, atdp_proportions


def test_proportions_follow_eq2_for_three_datasets():
    r = np.array([1.0, 2.0, 3.0])
    d = np.array([1.0, 0.9, 0.8])  # the paper's (alpha, beta, ..., 1) with the target first
    for e in range(6):
        ref = r * d ** e / (r * d ** e).sum()
        np.testing.assert_allclose(atdp_proportions(r, d, e), ref, rtol=1e-12)
    # scalar decay: every dataset but the target decays
    np.testing.assert_allclose(atdp_proportions([2, 1, 1], 0.5, 3, target=1),
                               np.array([2 / 8, 1, 1 / 8]) / (2 / 8 + 1 + 1 / 8), rtol=1e-12)


def test_batch_counts_per_epoch_match_eq2():
    s = ATDPSampler([400, 900, 650], ratios=[1.0, 2.0, 1.5], decay=[1.0, 0.8, 0.9], batch_size=8, seed=0)
    tb = 400 // 8
    for e in range(8):
        s.set_epoch(e)
        c = s.batch_counts()
        assert c[0] == tb
        ref = tb * np.array([1.0, 2.0 * 0.8 ** e, 1.5 * 0.9 ** e])
        assert np.all(np.abs(c - ref) <= 0.5)
        plan = s.plan()
        assert len(plan) == c.sum() == len(s)
        assert Counter(d for d, _ in plan) == {i: int(c[i]) for i in range(3) if c[i]}
    # a fixed number of steps per epoch, apportioned by the same proportions
    s2 = ATDPSampler([400, 900, 650], [1.0, 2.0, 1.5], [1.0, 0.8, 0.9], batch_size=8, batches_per_epoch=37)
    for e in range(5):
        c = s2.batch_counts(e)
        assert c.sum() == 37
        assert np.all(np.abs(c - 37 * atdp_proportions([1.0, 2.0, 1.5], [1.0, 0.8, 0.9], e)) < 1.0)


def test_batches_hold_distinct_valid_indices_and_streams_cover_datasets():
    sizes = [100, 53]
    s = ATDPSampler(sizes, [1, 3], 0.7, batch_size=10, seed=3)
    seen = {0: [], 1: []}
    for e in range(4):
        s.set_epoch(e)
        target_epoch = []
        for d, idx in s:
            assert idx.shape == (10,) and idx.dtype == np.int64
            assert len(set(idx.tolist())) == 10
            assert idx.min() >= 0 and idx.max() < sizes[d]
            seen[d].append(idx)
            if d == 0:
                target_epoch.append(idx)
        # the target dataset is passed exactly once per epoch
        assert sorted(np.concatenate(target_epoch).tolist()) == list(range(100))
    # the auxiliary stream is a sequence of permutations: each window of 5 batches (53 // 10)
    # holds 50 distinct indices, consecutive across epochs
    aux = np.concatenate(seen[1])
    for w in range(len(aux) // 50):
        assert len(set(aux[w * 50:(w + 1) * 50].tolist())) == 50
    counts = np.bincount(aux, minlength=53)
    assert counts.max() - counts.min() <= len(aux) // 50  # visited evenly


def test_reproducible_and_epoch_dependent():
    a = ATDPSampler([60, 80], [1, 1], 0.9, batch_size=4, seed=7)
    b = ATDPSampler([60, 80], [1, 1], 0.9, batch_size=4, seed=7)
    c = ATDPSampler([60, 80], [1, 1], 0.9, batch_size=4, seed=8)
    for e in (0, 3):
        a.set_epoch(e)
        b.set_epoch(e)
        c.set_epoch(e)
        pa, pb, pc = list(a), list(b), list(c)
        assert [d for d, _ in pa] == [d for d, _ in pb]
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(pa, pb))
        assert list(a)[0][1].tolist() == pa[0][1].tolist()  # iterating again gives the same epoch
        assert any(not np.array_equal(x, y) for (_, x), (_, y) in zip(pa, pc))
    a.set_epoch(0)
    p0 = list(a)
    a.set_epoch(1)
    assert any(not np.array_equal(x, y) for (_, x), (_, y) in zip(p0, list(a)))


def test_ddp_shards_are_disjoint_and_aligned():
    R = 3
    samplers = [ATDPSampler([90, 120], [1, 2], 0.8, batch_size=5, seed=1, num_replicas=R, rank=r) for r in range(R)]
    full = ATDPSampler([90, 120], [1, 2], 0.8, batch_size=5, seed=1, num_replicas=R, rank=0)
    for e in range(3):
        for s in samplers + [full]:
            s.set_epoch(e)
        plans = [list(s) for s in samplers]
        assert len({len(p) for p in plans}) == 1 and len(plans[0]) == len(full)
        assert len(plans[0]) == full.batch_counts().sum()
        for step, glob in enumerate(full.plan()):
            ds = {p[step][0] for p in plans}
            assert ds == {glob[0]}  # every rank trains the same branch at each step
            parts = [p[step][1] for p in plans]
            assert len(set(np.concatenate(parts).tolist())) == 15  # disjoint
            np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(glob[1]))
    # the target is seen once per epoch over all ranks together
    samplers[0].set_epoch(0)
    assert samplers[0].batch_counts()[0] == 90 // 15


def test_atdp_bad_input():
    with pytest.raises(ValueError, match="empty"):
        ATDPSampler([10, 0], [1, 1], 0.5, batch_size=2)
    with pytest.raises(ValueError, match="ratios must be >= 0"):
        ATDPSampler([10, 10], [1, -1], 0.5, batch_size=2)
    with pytest.raises(ValueError, match="all zero"):
        ATDPSampler([10, 10], [0, 0], 0.5, batch_size=2)
    with pytest.raises(ValueError, match="decay must be in"):
        ATDPSampler([10, 10], [1, 1], 0.0, batch_size=2)
    with pytest.raises(ValueError, match="decay must be in"):
        ATDPSampler([10, 10], [1, 1], 1.5, batch_size=2)
    with pytest.raises(ValueError, match="decay must be in"):
        ATDPSampler([10, 10], [1, 1], [1.0, -0.5], batch_size=2)
    with pytest.raises(ValueError, match="one value per dataset"):
        ATDPSampler([10, 10], [1, 1], [1.0, 0.5, 0.5], batch_size=2)
    with pytest.raises(ValueError, match="one value per dataset"):
        ATDPSampler([10, 10, 10], [1, 1], 0.5, batch_size=2)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        ATDPSampler([10, 3], [1, 1], 0.5, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        ATDPSampler([10, 10], [1, 1], 0.5, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        ATDPSampler([10, 10], [1, 1], 0.5, batch_size=2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="target"):
        ATDPSampler([10, 10], [1, 1], 0.5, batch_size=2, target=2)
    with pytest.raises(ValueError, match="target dataset"):
        ATDPSampler([10, 10], [0, 1], 0.5, batch_size=2, target=0)
    with pytest.raises(ValueError, match="at least one"):
        ATDPSampler([], [], 0.5, batch_size=2)
    with pytest.raises(TypeError, match="seed"):
        ATDPSampler([10, 10], [1, 1], 0.5, batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="ratios"):
        ATDPSampler([10, 10], [1, np.nan], 0.5, batch_size=2)
    with pytest.raises(ValueError, match="exactly one"):
        atdp_batch_counts([1, 1], 0.5, 0)
    s = ATDPSampler([10, 10], [1, 1], 0.5, batch_size=2)
    with pytest.raises(ValueError, match="epoch"):
        s.set_epoch(-1)
    # a zero-ratio dataset is allowed (never drawn), even when it is small
    z = ATDPSampler([10, 1], [1, 0], 0.5, batch_size=2)
    assert all(d == 0 for d, _ in z)


# ---------------------------------------------------------------- pose balancing
def _yaw_shapes(n=300, seed=0):
    """Frontal-heavy synthetic 'yaw': points squashed in x by a skewed factor."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(20, 2))
    yaw = np.concatenate([rng.normal(0, 0.15, int(n * 0.8)), rng.uniform(-1, 1, n - int(n * 0.8))])
    sx = np.cos(yaw * 1.2)
    shapes = base[None] * np.stack([sx, np.ones(n)], -1)[:, None, :]
    shapes[..., 0] += 0.5 * np.sin(yaw)[:, None] * base[None, :, 1] ** 2
    return shapes + rng.normal(0, 0.01, size=shapes.shape)


def test_pose_balanced_undersample_and_oversample():
    shapes = _yaw_shapes()
    ref = pose_bins(shapes, n_bins=5)
    for mode in ("undersample", "oversample"):
        s = PoseBalancedSampler(shapes, n_bins=5, mode=mode, seed=0)
        np.testing.assert_array_equal(s.labels, ref.labels)
        np.testing.assert_allclose(s.mean_of_means, ref.origin)
        idx = np.array(list(s))
        occ = s.bin_counts(idx)
        present = ref.counts > 0
        target = ref.counts[present].min() if mode == "undersample" else ref.counts[present].max()
        assert np.all(occ[present] == target) and np.all(occ[~present] == 0)
        assert len(idx) == len(s)
        s.set_epoch(1)
        assert not np.array_equal(np.array(list(s)), idx)
    assert ref.counts.max() > 3 * ref.counts[ref.counts > 0].min()  # the set was imbalanced


def test_pose_balanced_ddp_shards():
    shapes = _yaw_shapes(200, seed=1)
    R = 2
    parts = [list(PoseBalancedSampler(shapes, n_bins=4, seed=5, num_replicas=R, rank=r)) for r in range(R)]
    assert len(parts[0]) == len(parts[1])
    assert not set(parts[0]) & set(parts[1])  # under-sampling draws without replacement
    full = PoseBalancedSampler(shapes, n_bins=4, seed=5, num_replicas=R, rank=0).global_indices()
    assert sorted(parts[0] + parts[1]) == sorted(full.tolist())


def test_pose_balanced_on_aflw2000(shared_data):
    pts = np.load(shared_data / "aflw_3ddfa_multischeme" / "AFLW2000-3D-Reannotated.pts68.npy")
    shapes = np.transpose(pts, (0, 2, 1)).astype(float)
    s = PoseBalancedSampler(shapes, n_bins=9, mode="undersample", seed=0)
    before = s.bin_counts()
    after = s.bin_counts(np.array(list(s)))
    assert before.sum() == 2000 and before.max() > 2 * before[before > 0].min()
    assert len(set(after[after > 0].tolist())) == 1


def test_pose_balanced_bad_input():
    shapes = _yaw_shapes(50)
    with pytest.raises(ValueError, match="mode"):
        PoseBalancedSampler(shapes, mode="balance")
    with pytest.raises(ValueError, match="n_bins"):
        PoseBalancedSampler(shapes, n_bins=0)
    with pytest.raises(ValueError, match="shapes"):
        PoseBalancedSampler(shapes[:, :, :1])
    with pytest.raises(ValueError, match="rank"):
        PoseBalancedSampler(shapes, num_replicas=2, rank=5)
