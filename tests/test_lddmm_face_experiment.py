"""tools/lddmm_face_experiment.py: the 29-point HELEN labels mapped into the 300w_train_crops images
land on the independent 68-point labels of the same faces (real data; skips without it)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def test_helen_29_point_labels_map_onto_the_68_point_crops(shared_data):
    from lddmm_face_experiment import helen_pairs_29

    from flmcore.datasets import LandmarkDataset

    pairs, only29 = helen_pairs_29(shared_data)
    assert len(pairs) == 234 and only29.shape == (114, 29, 2)
    ds = LandmarkDataset.from_folder(shared_data / "300w_train_crops" / "helen", "ibug68")
    by_name = {f.name: f.shape for f in ds.faces}
    # eye corners: 29-point 8/10 (left outer/inner), 11/9 (right inner/outer) vs iBUG 36/39, 42/45
    err = []
    for name, s29 in pairs.items():
        s68 = by_name[name]
        iod = np.linalg.norm(s68[36] - s68[45])
        err.append(np.linalg.norm(s29[[8, 10, 11, 9]] - s68[[36, 39, 42, 45]], axis=1) / iod)
    err = np.array(err)
    assert err.mean() < 0.035                    # two annotations of the same corners: about 2.7 %
    assert np.median(err) < 0.03
