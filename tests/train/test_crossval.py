"""Cross-validation splits by subject, and the overlap scores from confusion counts."""

from __future__ import annotations

import numpy as np
import pytest

from bids_infantseg.core.metrics import confusion_matrix, scores
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.train.crossval import FoldError, make_folds
from bids_infantseg.train.settings import PAPER_LR_GRID


@pytest.mark.parametrize("scheme,k", [("loso", None), ("kfold", 2), ("kfold", 3), ("kfold", 7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_never_share_a_subject_and_test_each_once(scheme, k, seed):
    subjects = [f"s{i:02d}" for i in range(7)] * 3  # several scans per subject
    folds = make_folds(subjects, scheme, k, seed)
    assert len(folds) == (7 if scheme == "loso" else k)
    tested = [s for fold in folds for s in fold.test]
    assert sorted(tested) == sorted(set(subjects))  # every subject held out exactly once
    for fold in folds:
        assert not set(fold.test) & set(fold.train)
        assert set(fold.test) | set(fold.train) == set(subjects)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_is_seeded():
    subjects = [f"s{i}" for i in range(10)]
    assert make_folds(subjects, "kfold", 3, 5) == make_folds(subjects, "kfold", 3, 5)
    assert make_folds(subjects, "kfold", 3, 5) != make_folds(subjects, "kfold", 3, 6)


def test_too_few_subjects_for_the_scheme():
    with pytest.raises(FoldError, match="at least 2 subjects"):
        make_folds(["a", "a"], "loso")
    with pytest.raises(FoldError, match="kfold:4"):
        make_folds(["a", "b", "c"], "kfold", 4)
    assert make_folds(["a"], "none") == []


def test_scores_from_confusion_are_each_labels_dice_and_accuracy():
    """Checked against Dice and accuracy counted from each label's voxel masks."""
    rng = np.random.default_rng(0)
    reference = rng.choice(DRAWEM9.indices[:6], size=(8, 9, 10))
    predicted = np.where(rng.uniform(size=reference.shape) < 0.7, reference,
                         rng.choice(DRAWEM9.indices[:7], size=reference.shape))
    got = scores(confusion_matrix(predicted, reference, DRAWEM9.indices))
    for k, index in enumerate(DRAWEM9.indices):
        a, b = predicted == index, reference == index
        both = np.sum(a & b)
        dice = 2 * both / (a.sum() + b.sum()) if a.any() or b.any() else np.nan
        accuracy = both / b.sum() if b.any() else np.nan
        np.testing.assert_allclose(got["dice"][k], dice, equal_nan=True)
        np.testing.assert_allclose(got["accuracy"][k], accuracy, equal_nan=True)
    assert np.isnan(got["dice"][-1]) and np.isnan(got["accuracy"][6])  # absent / predicted only
    assert not np.isnan(got["dice"][6])


def test_the_paper_grid_has_nine_rates():
    assert len(PAPER_LR_GRID) == 9 and PAPER_LR_GRID[0] == 1e-5 and PAPER_LR_GRID[-1] == 1e-1
