import numpy as np
import pytest

from bids_infantseg.core.metrics import confusion_matrix, overlap_table, scores
from bids_infantseg.model.labels import Label, LabelSet

SET = LabelSet("t", (Label(0, "bg", "BG", "#000000"), Label(3, "a", "A", "#ff0000"),
                     Label(7, "b", "B", "#00ff00")))


def test_dice_and_accuracy_by_hand():
    reference = np.array([0, 3, 3, 3, 3, 7, 7, 0])
    predicted = np.array([0, 3, 3, 7, 0, 7, 7, 7])
    table = overlap_table(predicted, reference, SET).set_index("index")
    # label 3: |A|=2, |B|=4, |A∩B|=2 -> Dice 4/6, accuracy 2/4
    assert table.loc[3, "dice"] == pytest.approx(2 * 2 / 6)
    assert table.loc[3, "accuracy"] == pytest.approx(0.5)
    # label 7: |A|=4, |B|=2, |A∩B|=2 -> Dice 4/6, accuracy 1
    assert table.loc[7, "dice"] == pytest.approx(4 / 6)
    assert table.loc[7, "accuracy"] == pytest.approx(1.0)
    assert table["reference_voxels"].sum() == reference.size


def test_absent_label_is_nan_not_perfect():
    reference = np.zeros(5, int)
    table = overlap_table(reference, reference, SET).set_index("index")
    assert table.loc[0, "dice"] == 1.0
    assert np.isnan(table.loc[3, "dice"]) and np.isnan(table.loc[3, "accuracy"])


def test_confusion_matrix_rows_are_reference():
    counts = confusion_matrix(np.array([3, 3, 7]), np.array([3, 7, 7]), SET.indices)
    assert counts.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_indices_outside_the_set_are_refused():
    with pytest.raises(ValueError, match=r"\[5\]"):
        overlap_table(np.array([0, 5]), np.array([0, 0]), SET)


def test_scores_of_a_stack_of_confusions_match_each_scans_table():
    rng = np.random.default_rng(0)
    maps = [(rng.choice(SET.indices, 50), rng.choice(SET.indices, 50)) for _ in range(3)]
    stacked = scores(np.stack([confusion_matrix(p, r, SET.indices) for p, r in maps]))
    for i, (predicted, reference) in enumerate(maps):
        table = overlap_table(predicted, reference, SET)
        np.testing.assert_allclose(stacked["dice"][i], table["dice"])
        np.testing.assert_allclose(stacked["accuracy"][i], table["accuracy"])
