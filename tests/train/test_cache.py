"""The training cache: labels onto the model grid, checks before training, lazy slices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from bids_infantseg.core.conform import Grid
from bids_infantseg.train.cache import (
    SliceDataset,
    epoch_items,
    nearest_labels,
    prepare,
    slice_pool,
)
from bids_infantseg.train.pairs import find_training_data
from tests.model_factory import tiny_card
from tests.train.factory import bobs_dataset, labelled_dataset


def card_for(labels):
    card = tiny_card(views={"axial": 1.0, "coronal": 1.0})
    card.labels = labels
    card.architecture = type(card.architecture)(num_classes=len(labels), num_filters=4)
    return card


def cached(tmp_path, **kwargs):
    root, labels = labelled_dataset(tmp_path / "bids", **kwargs)
    data = find_training_data(root, labels, work_dir=tmp_path / "work")
    return data, prepare(data.pairs, card_for(data.label_set), tmp_path / "cache")


def test_nearest_labels_follow_the_affines():
    labels = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    grid = Grid((2, 2, 3), np.diag([4.0, 4.0, 4.0, 1.0]))  # every other native voxel
    out = nearest_labels(labels, affine, grid)
    assert np.array_equal(out, labels[::2, ::2, ::2][:2, :2, :3])
    shifted = Grid((2, 2, 2), np.array([[2.0, 0, 0, 2], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]))
    assert np.array_equal(nearest_labels(labels, affine, shifted)[0], labels[1, :2, :2])
    outside = Grid((1, 1, 1), np.array([[1.0, 0, 0, -50], [0, 1, 0, 0], [0, 0, 1, 0],
                                        [0, 0, 0, 1]]))
    assert nearest_labels(labels + 1, affine, outside).item() == 0


def test_volumes_are_cached_with_their_classes_and_slices(tmp_path):
    data, result = cached(tmp_path, subjects=("01", "02"))
    assert [v.key for v in result.volumes] == ["sub-01", "sub-02"] and result.skipped == []
    volume = result.volumes[0]
    image, classes = volume.arrays()
    assert image.shape == classes.shape == (32, 32, 32)
    assert set(np.unique(classes).tolist()) == {0, 1, 2, 3}
    assert sum(volume.counts) == classes.size
    assert list(volume.slices["axial"]) == \
        np.flatnonzero(np.abs(np.asarray(image)).max(axis=(0, 1)) > 0).tolist()
    assert 0 < float(np.max(image)) <= 1.0
    again = prepare(data.pairs, card_for(data.label_set), tmp_path / "cache")
    assert [v.folder for v in again.volumes] == [v.folder for v in result.volumes]


def test_label_missing_from_the_table_leaves_the_scan_out_with_a_clear_reason(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02"))
    path = labels / "sub-02" / "anat" / "sub-02_desc-manual_dseg.nii.gz"
    img = nib.load(path)
    data_ = np.asanyarray(img.dataobj).copy()
    data_[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data_, img.affine), path)
    data = find_training_data(root, labels, work_dir=tmp_path / "work")
    result = prepare(data.pairs, card_for(data.label_set), tmp_path / "cache")
    assert [v.key for v in result.volumes] == ["sub-01"]
    assert "label value(s) [7] are not in the lookup table" in result.skipped[0].reason


def test_aseg_codes_are_cached_as_drawem9_classes(tmp_path):
    """Baby Open Brains: the aseg is mapped when read, for the cache and for evaluation."""
    root = bobs_dataset(tmp_path / "bids", {"01": ("1mo",)})
    data = find_training_data(root, root, labels_map="aseg-to-drawem9",
                              work_dir=tmp_path / "work")
    (volume,) = prepare(data.pairs, card_for(data.label_set), tmp_path / "cache").volumes
    aseg = np.asanyarray(nib.load(data.pairs[0].labels).dataobj)
    reference, _ = volume.reference()
    for code, index in ((17, 9), (14, 1), (41, 3), (2, 3), (42, 2), (0, 0)):
        assert set(np.unique(reference[aseg == code]).tolist()) == {index}, code
    _, classes = volume.arrays()  # DrawEM9's class k is index k
    assert set(np.unique(classes).tolist()) == {0, 1, 2, 3, 9}
    assert volume.counts[4] == 0  # no head tissue in an aseg: label 4 is not needed


def test_aseg_code_missing_from_the_mapping_leaves_the_scan_out_naming_file_and_code(tmp_path):
    root = bobs_dataset(tmp_path / "bids", {"01": ("1mo",), "02": ("1mo",)})
    path = root / "sub-02" / "ses-1mo" / "anat" / \
        "sub-02_ses-1mo_space-INFANTMNIacpc_desc-aseg_dseg.nii.gz"
    img = nib.load(path)
    codes = np.asanyarray(img.dataobj).copy()
    codes[0, 0, 0] = 1000
    nib.save(nib.Nifti1Image(codes, img.affine), path)
    data = find_training_data(root, root, labels_map="aseg-to-drawem9",
                              work_dir=tmp_path / "work")
    result = prepare(data.pairs, card_for(data.label_set), tmp_path / "cache")
    assert [v.subject for v in result.volumes] == ["01"]
    assert result.skipped[0].reason.startswith(
        f"{path}: label value(s) [1000] are not in the mapping aseg-to-drawem9")


def test_non_integer_labels_leave_the_scan_out(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    path = labels / "sub-01" / "anat" / "sub-01_desc-manual_dseg.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) * 0.5, img.affine), path)
    data = find_training_data(root, labels, work_dir=tmp_path / "work")
    result = prepare(data.pairs, card_for(data.label_set), tmp_path / "cache")
    assert result.volumes == [] and "non-integer" in result.skipped[0].reason


def test_slices_are_read_lazily_and_augmented_reproducibly(tmp_path):
    _, result = cached(tmp_path, subjects=("01", "02"))
    pool = slice_pool(result.volumes, ["axial", "coronal"])
    items = epoch_items(pool, 5, np.random.default_rng(0))
    assert len(items) == 5 and np.array_equal(items, epoch_items(pool, 5,
                                                                 np.random.default_rng(0)))
    assert len(epoch_items(pool, None, np.random.default_rng(0))) == len(pool)
    dataset = SliceDataset(result.volumes, augment=True, seed=3)
    item = (0, *items[0])
    image, target = dataset[item]
    assert image.shape == (1, 32, 32) and target.shape == (32, 32)
    assert image.dtype == torch.float32 and target.dtype == torch.int64
    again = SliceDataset(result.volumes, augment=True, seed=3)[item]
    assert torch.equal(image, again[0]) and torch.equal(target, again[1])
    plain = SliceDataset(result.volumes, augment=False, seed=3)[item]
    vol, axis, index = items[0]
    assert torch.equal(plain[1], torch.from_numpy(
        np.take(result.volumes[vol].arrays()[1], index, axis=axis).astype(np.int64)))


def test_an_empty_image_leaves_the_scan_out(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02"))
    path = root / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), path)
    data = find_training_data(root, labels, work_dir=tmp_path / "work")
    result = prepare(data.pairs, card_for(data.label_set), tmp_path / "cache")
    assert [v.key for v in result.volumes] == ["sub-02"]
    assert "sub-01_T2w.nii.gz" in result.skipped[0].item
