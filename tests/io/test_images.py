import gzip
import logging

import nibabel as nib
import numpy as np
import pytest

from bids_infantseg.io.images import BadImageError, implausibilities, load_label_map, load_t2w
from tests.conftest import head_image

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
SHAPE = (80, 80, 40)  # 80 x 80 x 80 mm


def _head(shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random(shape) * 100).astype(np.int16)


def _save(path, data, affine=AFFINE, **header):
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return path


def _fails(path, *words):
    with pytest.raises(BadImageError) as info:
        load_t2w(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for word in words:
        assert word in message, message
    return message


def test_good_image_is_float32_3d(tmp_path):
    path = _save(tmp_path / "good.nii.gz", _head())
    img = load_t2w(path)
    assert img.shape == SHAPE
    assert img.dataobj.dtype == np.float32
    np.testing.assert_array_equal(img.affine, AFFINE)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), _head())


def test_4d_with_one_volume_is_squeezed(tmp_path):
    path = _save(tmp_path / "one.nii.gz", _head()[..., None])
    assert load_t2w(path).shape == SHAPE


def test_missing_file(tmp_path):
    _fails(tmp_path / "nope.nii.gz", "no such file")


@pytest.mark.parametrize("target, hint", [
    ("../gone/sub-01_T2w.nii.gz", None),
    ("../.git/annex/objects/Xy/Zw/MD5E-s1--x.nii.gz/MD5E-s1--x.nii.gz", "datalad get"),
], ids=["moved", "annex"])
def test_a_dangling_link_says_where_it_points(tmp_path, target, hint):
    """Before: "no such file", which the user sees listed there."""
    (tmp_path / "anat").mkdir()
    link = tmp_path / "anat" / "sub-01_T2w.nii.gz"
    link.symlink_to(target)
    message = _fails(link, f"broken symbolic link to {(tmp_path / target[3:])}, which does "
                           "not exist")
    assert (hint in message) if hint else "annex" not in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    _fails(path, "empty file")


def test_not_nifti(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("hello, this is not an image\n" * 20)
    _fails(path, "NIfTI")


def test_truncated_gzip(tmp_path):
    full = _save(tmp_path / "full.nii.gz", _head())
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _fails(path, "truncated")


def test_truncated_data(tmp_path):
    full = _save(tmp_path / "full.nii", _head())
    path = tmp_path / "cut.nii"
    path.write_bytes(full.read_bytes()[:1000])
    _fails(path, "truncated")


def test_gzip_of_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 400))
    _fails(path)


def test_2d(tmp_path):
    _fails(_save(tmp_path / "flat.nii.gz", _head((80, 80))), "2D")
    _fails(_save(tmp_path / "slice.nii.gz", _head((80, 80, 1))), "2D")


def test_4d(tmp_path):
    _fails(_save(tmp_path / "series.nii.gz", _head((80, 80, 40, 3))), "4D")


@pytest.mark.parametrize("value", [0, 7])
def test_constant(tmp_path, value):
    data = np.full(SHAPE, value, np.int16)
    _fails(_save(tmp_path / "flat.nii.gz", data), "all zero" if value == 0 else "constant")


def test_all_nan(tmp_path):
    data = np.full(SHAPE, np.nan, np.float32)
    _fails(_save(tmp_path / "nan.nii.gz", data), "NaN")


def test_many_inf(tmp_path):
    data = _head().astype(np.float32)
    data[:10] = np.inf
    _fails(_save(tmp_path / "inf.nii.gz", data), "NaN or infinite")


def test_a_few_nan_are_zeroed_with_a_warning(tmp_path, caplog):
    data = _head().astype(np.float32)
    data[3, 4, 5] = np.nan
    data[6, 7, 8] = -np.inf
    path = _save(tmp_path / "few.nii.gz", data)
    with caplog.at_level(logging.WARNING):
        out = np.asanyarray(load_t2w(path).dataobj)
    assert "2 NaN" in caplog.text
    assert np.isfinite(out).all()
    assert out[3, 4, 5] == 0 and out[6, 7, 8] == 0


@pytest.mark.parametrize("affine", [
    np.zeros((4, 4)),
    np.diag([1.0, 1.0, 0.0, 1.0]),
    np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]),
    np.diag([1.0, np.nan, 2.0, 1.0]),
])
def test_bad_affine(tmp_path, affine):
    path = _save(tmp_path / "bad.nii", _head())
    header = nib.load(path).header.copy()
    for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
        header[name] = affine[row]  # written raw: nibabel refuses to build such an image
    header["sform_code"], header["qform_code"] = 1, 0
    with path.open("r+b") as handle:
        header.write_to(handle)
    _fails(path, "affine")


def test_broken_sform_falls_back_to_valid_qform(tmp_path, caplog):
    img = nib.Nifti1Image(_head(), None)
    img.set_qform(AFFINE, code=1)
    img.set_sform(np.zeros((4, 4)), code=1)
    nib.save(img, tmp_path / "qform.nii.gz")
    with caplog.at_level(logging.WARNING):
        out = load_t2w(tmp_path / "qform.nii.gz")
    assert "qform" in caplog.text
    np.testing.assert_allclose(out.affine, AFFINE)


def test_qform_only_is_used(tmp_path):
    rotated = AFFINE.copy()
    rotated[:3, :3] = rotated[:3, :3][[1, 0, 2]]
    img = nib.Nifti1Image(_head(), None)
    img.set_qform(rotated, code=1)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "q.nii.gz")
    np.testing.assert_allclose(load_t2w(tmp_path / "q.nii.gz").affine, rotated)


def test_too_few_voxels(tmp_path):
    _fails(_save(tmp_path / "thin.nii.gz", _head((80, 80, 8)), np.diag([1, 1, 10.0, 1])),
           "too small")


def test_too_small_field_of_view(tmp_path):
    _fails(_save(tmp_path / "tiny.nii.gz", _head((40, 80, 80)), np.diag([1, 1, 1.0, 1])),
           "too small", "40 x 80 x 80 mm")


def test_other_formats_are_refused(tmp_path):
    path = tmp_path / "head.mgz"
    nib.save(nib.MGHImage(_head().astype(np.float32), AFFINE), path)
    _fails(path, "not a NIfTI image")


def test_label_map_is_int64_and_a_single_volume_is_squeezed(tmp_path):
    labels = np.zeros((8, 9, 10, 1), dtype=np.float32)
    labels[2:5, 2:5, 2:5] = 3
    path = tmp_path / "sub-01_desc-x_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels, AFFINE), path)
    data, affine = load_label_map(path)
    assert data.dtype == np.int64 and data.shape == (8, 9, 10)
    assert set(np.unique(data)) == {0, 3}
    np.testing.assert_allclose(affine, AFFINE)


@pytest.mark.parametrize(("values", "problem"), [
    (np.full((4, 4, 4), 1.5, dtype=np.float32), "non-integer"),
    (np.full((4, 4, 4), np.nan, dtype=np.float32), "non-integer"),
    (np.full((4, 4, 4), -1, dtype=np.int16), "negative"),
    (np.zeros((4, 4, 4, 2), dtype=np.int16), "not 3D"),
])
def test_unusable_label_maps_are_one_line_naming_the_file(tmp_path, values, problem):
    path = tmp_path / "sub-01_desc-x_dseg.nii.gz"
    nib.save(nib.Nifti1Image(values, AFFINE), path)
    with pytest.raises(BadImageError, match=problem) as error:
        load_label_map(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def _infant_head(zooms=(1.0, 1.0, 1.0), shape=(150, 180, 140)) -> nib.Nifti1Image:
    """The test head (~ 120 x 150 x 110 mm) on a grid of ``zooms``, centred."""
    grid = tuple(int(round(n / z)) for n, z in zip(shape, zooms, strict=True))
    return nib.Nifti1Image(head_image(grid, zooms), np.diag([*zooms, 1.0]))


def test_an_infant_head_scan_is_plausible():
    assert implausibilities(_infant_head()) == []
    assert implausibilities(_infant_head((0.8, 0.8, 3.0))) == []  # thick 2D slices


def test_10_mm_voxels_and_a_1_3_m_field_of_view_are_named():
    img = nib.Nifti1Image(head_image((130, 130, 130), (1.0, 1.0, 1.0)), np.diag([10.0] * 3 + [1]))
    problems = implausibilities(img)
    assert problems == [
        "voxels 10.00 x 10.00 x 10.00 mm (above 3 mm in-plane, slices thicker than 6 mm): "
        "not an infant head scan, or a header in other units",
        "field of view 1300 x 1300 x 1300 mm is outside 80-400 mm along some axis: not an "
        "infant head, or wrong voxel sizes",
        "the head measures 1180 x 1300 x 1080 mm, not the size of an infant head (longest "
        "side at least 40 mm, shortest at most 250 mm): wrong voxel sizes, or not an infant",
    ]


def test_sub_millimetre_units_and_thin_slabs_are_named():
    tiny = implausibilities(nib.Nifti1Image(head_image((150, 180, 140), (1.0, 1.0, 1.0)),
                                            np.diag([0.05] * 3 + [1])))
    assert [p.split(" ")[0] for p in tiny] == ["voxels", "field", "the"]
    assert "below 0.1 mm" in tiny[0]
    slab = _infant_head((1.0, 1.0, 7.0), shape=(150, 180, 70))
    assert implausibilities(slab)[0].startswith("voxels 1.00 x 1.00 x 7.00 mm (slices thicker")
