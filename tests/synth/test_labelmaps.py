"""Label maps as anatomy: a scheme maps their labels, the head and CSF are painted around
them, brains are scaled to the age and mirrored, and bad schemes or maps fail loudly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_infantseg import synth
from bids_infantseg.synth.labelmaps import LabelMap, Scheme, SchemeError

ASEG = Scheme.load("freesurfer-aseg")
DRAWEM9_TO_ASEG = {3: (2, 41), 2: (3, 42), 5: (4, 43), 6: (8, 47), 7: (10, 49), 8: (16, 16),
                   9: (17, 53)}
"""A procedural head's DrawEM9 labels -> FreeSurfer codes (left, right)."""


def write_aseg(path: Path, *, left_hippocampus_only: bool = False, extra: int | None = None,
               seed: int = 2) -> Path:
    """An aseg-like brain-only label map (RAS, 2 mm) made from a procedural head."""
    head = synth.phantom(1.0, seed=seed, shape=(80, 96, 80), voxel_size=2.0)
    x = (head.affine @ np.vstack([np.indices(head.labels.shape).reshape(3, -1),
                                  np.ones(head.labels.size)]))[0].reshape(head.labels.shape)
    aseg = np.zeros(head.labels.shape, dtype=np.int16)
    for drawem, (left, right) in DRAWEM9_TO_ASEG.items():
        aseg[(head.labels == drawem) & (x < 0)] = left
        aseg[(head.labels == drawem) & (x >= 0)] = right
    if left_hippocampus_only:
        aseg[aseg == 53] = 41
    if extra is not None:
        aseg[tuple(s // 2 for s in aseg.shape)] = extra
    nib.save(nib.Nifti1Image(aseg, head.affine), path)
    return path


def brain_ml(labels: np.ndarray, voxel_mm: float) -> float:
    return float(np.isin(labels, (2, 3, 5, 6, 7, 8, 9)).sum() * voxel_mm ** 3 / 1000.0)


@pytest.fixture(scope="module")
def aseg_file(tmp_path_factory) -> Path:
    return write_aseg(tmp_path_factory.mktemp("aseg") / "aseg.nii.gz")


def draw(anatomy, seed: int, age: float = 3.0, shape=(64, 64, 64), voxel=3.0) -> np.ndarray:
    return synth.training_volume(np.random.default_rng(seed), age, shape, voxel,
                                 anatomy=anatomy)[1]


def test_brain_only_map_gets_csf_and_head_and_keeps_its_structures(aseg_file):
    labels = draw(LabelMap(aseg_file, ASEG, 1.0), seed=0)
    assert set(np.unique(labels)) == set(range(10))
    # CSF surrounds the brain, head tissue surrounds the CSF
    depth = ndimage.distance_transform_edt(labels > 0)
    assert depth[labels == 4].mean() < depth[labels == 1].mean() < depth[labels == 3].mean()
    # ventricles stay ventricles: inside the brain, not on its outer CSF
    brain = ndimage.binary_fill_holes(np.isin(labels, (2, 3, 5, 7)))
    assert (brain[labels == 5]).mean() > 0.95


def test_brain_is_scaled_to_the_age(aseg_file):
    source = LabelMap(aseg_file, ASEG, 1.0)
    newborn = np.mean([brain_ml(draw(source, s, age=0.0), 3.0) for s in (1, 2)])
    one_year = np.mean([brain_ml(draw(source, s, age=12.0), 3.0) for s in (1, 2)])
    assert 300 < newborn < 520 and 700 < one_year < 1100


def test_left_right_mirrored_half_the_time(tmp_path):
    """A source with its hippocampus on the left only lands on either side."""
    source = LabelMap(write_aseg(tmp_path / "a.nii.gz", left_hippocampus_only=True), ASEG, 1.0)
    sides = []
    for seed in range(8):
        labels = draw(source, seed)
        sides.append(bool((labels[:32] == 9).sum() > (labels[32:] == 9).sum()))  # RAS: 0 = left
    assert 0 < sum(sides) < len(sides)


def test_label_missing_from_the_scheme_is_an_error_naming_file_and_label(tmp_path):
    path = write_aseg(tmp_path / "odd.nii.gz", extra=999)
    with pytest.raises(SchemeError, match=r"odd\.nii\.gz: labels \[999\] are not in scheme"):
        draw(LabelMap(path, ASEG, 1.0), seed=0)


def test_scheme_with_an_unknown_class_or_name_is_an_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "classes": {"2": "white_matter"}}))
    with pytest.raises(SchemeError, match="unknown generation classes.*white_matter"):
        Scheme.load(bad)
    with pytest.raises(SchemeError, match="no such scheme"):
        Scheme.load("no-such-scheme")


def test_shipped_scheme_covers_the_real_infant_asegs(aseg_root):
    for path in sorted(aseg_root.glob("*_aseg.nii.gz")):
        codes = set(np.unique(np.asarray(nib.load(path).dataobj)).tolist()) - {0}
        assert codes <= {code for code, _ in ASEG.classes}, path.name


def test_thick_cortex_of_a_real_aseg_is_thinned_opening_its_sulci(aseg_root):
    """Automatic asegs label cortex thick and touching across sulci; thinning opens CSF
    between banks that meet and repaints a thinner ribbon, without moving the brain's outer
    surface inwards (which gave synthetic newborns far too much extra-cerebral CSF)."""
    path = aseg_root / "1mo_aseg.nii.gz"
    kept = draw(LabelMap(path, ASEG, 1.0, thin_cortex=0.0), 4, 0.5, (96, 96, 96), 2.0)
    thinned = draw(LabelMap(path, ASEG, 1.0, thin_cortex=1.0, cortex_mm=(1.5, 1.5),
                            open_mm=(2.5, 2.5)), 4, 0.5, (96, 96, 96), 2.0)
    hull = ndimage.binary_erosion(ndimage.binary_fill_holes(np.isin(kept, (2, 3, 5, 7))),
                                  iterations=2)
    inner_csf = [((labels == 1) & hull).sum() for labels in (kept, thinned)]
    assert inner_csf[1] > 1.3 * inner_csf[0] + 50
    share = [(labels == 2).sum() / np.isin(labels, (2, 3)).sum() for labels in (kept, thinned)]
    assert share[0] > 0.55 and 0.25 < share[1] < share[0] - 0.1
    outer = [ndimage.binary_fill_holes(ndimage.binary_closing(np.isin(labels, (2, 3, 5, 7)),
                                                              iterations=3)).sum()
             for labels in (kept, thinned)]
    assert outer[1] > 0.9 * outer[0]


def test_fused_sulcal_banks_keep_their_cortex():
    """A slab of cortex between two white-matter gyri with no CSF in it (a fused sulcus of an
    automatic aseg): the ribbon repaint keeps cortex on both banks, along a CSF midline,
    instead of turning the slab into white matter."""
    from bids_infantseg.synth.head import cortical_ribbon
    from bids_infantseg.synth.labelmaps import _cortex_depth, split_fused_banks

    gen = np.zeros((41, 12, 12), dtype=np.uint8)
    gen[:, :, :] = 3  # white matter
    gen[14:27] = 2  # 13 mm of fused cortex, 1 mm voxels
    gen[:, :, 10:] = 1  # CSF over the top, far from the slab's depth
    spacing = np.ones(3)
    repainted = []
    for split in (False, True):
        labels = gen.copy()
        if split:
            split_fused_banks(labels, _cortex_depth(labels, spacing), 2.0, spacing)
        cortical_ribbon(labels, np.isin(labels, (2, 3)), 2.0, spacing,
                        inside=(labels > 0) & (labels != 1))
        repainted.append(labels[:, :, 3])
    unsplit, split = repainted
    assert not (unsplit[14:27] == 2).any()  # no CSF to measure from: all white matter
    assert split[20].tolist() == [1] * 12  # the midline opened
    assert (split[18] == 2).all() and (split[22] == 2).all()  # both banks lined with cortex
    assert (split[10] == 3).all() and (split[30] == 3).all()  # the gyri stay white matter
