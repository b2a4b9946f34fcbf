"""Open a T2w image and refuse, in one line, anything that cannot be a head scan.

Why: a participant run reads many scans; a bad one must cost one clear line ("file: problem")
before any heavy work, not a traceback deep inside resampling or the network.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger(__name__)

MIN_FOV_MM = 60.0
"""A neonatal head is ~90 mm across; less field of view than this along any axis is a slab,
a localiser or a wrong header, not a head."""

MIN_VOXELS = 16
"""Fewer voxels than this along an axis cannot be segmented slice by slice."""

PLAUSIBLE_VOXEL_MM = (0.1, 3.0, 6.0)
"""Smallest voxel side, largest in-plane side and largest slice thickness (the largest side)
an infant head scan has. Infant T2w are acquired at 0.4-1.2 mm in-plane, as 3D volumes or
2D slices up to ~ 4-5 mm thick; beyond 3 mm in-plane or 6 mm slices the 1-3 mm thin infant
cortex cannot be resolved, and below 0.1 mm no MRI scanner images a head: such sizes are
almost always a header in other units (cm, m) or a localiser."""

PLAUSIBLE_FOV_MM = (80.0, 400.0)
"""Field of view along every voxel axis. A term newborn's head is ~ 90 mm across at its
narrowest (biparietal), so less than 80 mm cannot hold an infant head (a slab, a crop or a
wrong voxel size); a 3-year-old's head with neck and shoulders fits in 300 mm, body coils
reach ~ 400 mm, and more is a whole-body scan or a header in other units."""

PLAUSIBLE_HEAD_MM = (40.0, 250.0)
"""Extent of the imaged head (voxels brighter than a tenth of the bright tissue): its longest
side at least 40 mm (a 20-week fetal brain is ~ 55 mm long) and its shortest side at most
250 mm (a 3-year-old's head is ~ 140 mm wide, 180 mm long; a neck and shoulders add less
than that across the thinnest side). Outside: an adult or a body, or wrong voxel sizes."""

MAX_NONFINITE_FRACTION = 0.001
"""Up to this fraction of NaN/Inf voxels (stray voxels from a converter) are set to 0 with a
warning; more means the data are broken."""

_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError)


class BadImageError(InfantsegError, ValueError):
    """An input image that cannot be segmented; the message names the file and the problem."""


def load_t2w(path: str | Path) -> nib.Nifti1Image:
    """Load and check a 3D T2w NIfTI image; its data come back as float32, read once.

    A 4D image with one volume is squeezed to 3D. Raises :class:`BadImageError`.
    """
    path = Path(path)
    img = _open(path)
    affine = _checked_affine(path, img)
    shape = _checked_shape(path, img.shape)
    try:
        data = img.get_fdata(dtype=np.float32)
    except (*_READ_ERRORS, MemoryError) as exc:
        raise _bad(path, f"image data cannot be read, file truncated or corrupt ({exc})") from exc
    data = data.reshape(shape)
    _check_size(path, shape, affine)
    data = _checked_values(path, data)
    out = nib.Nifti1Image(data, affine, _float_header(img))
    out.set_data_dtype(np.float32)
    return out


def _bad(path: Path, problem: str) -> BadImageError:
    return BadImageError(f"{path}: {' '.join(problem.split())}")


def _open(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    if not path.exists():
        raise _bad(path, _broken_link(path) if path.is_symlink() else "no such file")
    if not path.is_file():
        raise _bad(path, "not a file")
    if path.stat().st_size == 0:
        raise _bad(path, "empty file")
    try:
        img = nib.load(path)
    except _READ_ERRORS as exc:
        raise _bad(path, f"not a readable NIfTI image ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise _bad(path, f"not a NIfTI image ({type(img).__name__})")
    return img


def _broken_link(path: Path) -> str:
    """Where a dangling symbolic link points; DataLad and git-annex datasets hold such links
    until a file's content is fetched."""
    target = path.readlink()
    where = target if target.is_absolute() else path.parent / target
    problem = f"broken symbolic link to {os.path.normpath(where)}, which does not exist"
    if "annex/objects" in target.as_posix():
        problem += " (a git-annex file whose content is not here: datalad get / git annex get)"
    return problem


def _valid_affine(affine: np.ndarray | None) -> bool:
    """Finite and invertible, with a non-degenerate voxel size along every axis."""
    if affine is None or not np.all(np.isfinite(affine)):
        return False
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms < 1e-6):
        return False
    # Determinant relative to the voxel volume: ~1 for any rigid orientation, ~0 when singular.
    return abs(np.linalg.det(affine[:3, :3])) / np.prod(zooms) > 1e-6


def _checked_affine(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """``img.affine`` (sform if set, else qform); a broken sform falls back to a valid qform."""
    affine = img.affine
    if _valid_affine(affine):
        return affine
    qform, qcode = img.header.get_qform(coded=True)
    if int(img.header["sform_code"]) > 0 and qcode > 0 and _valid_affine(qform):
        LOGGER.warning("%s: sform is not a valid affine; using the qform", path)
        return qform
    raise _bad(path, "the header's voxel-to-world affine is singular, zero or not finite: "
                     f"{np.array2string(affine, precision=3)}")


def _checked_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) < 3 or 1 in shape[:3]:
        raise _bad(path, f"2D image (shape {shape}); a 3D volume is needed")
    extra = shape[3:]
    if any(s != 1 for s in extra):
        raise _bad(path, f"{len(shape)}D image (shape {shape}); give a single 3D volume")
    return tuple(int(s) for s in shape[:3])


def _check_size(path: Path, shape: tuple[int, int, int], affine: np.ndarray) -> None:
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    fov = np.asarray(shape) * zooms
    if min(shape) < MIN_VOXELS or fov.min() < MIN_FOV_MM:
        raise _bad(path, f"too small to hold a head: shape {shape}, field of view "
                         f"{' x '.join(f'{f:.0f}' for f in fov)} mm (needs at least "
                         f"{MIN_VOXELS} voxels and {MIN_FOV_MM:.0f} mm along every axis)")


def _checked_values(path: Path, data: np.ndarray) -> np.ndarray:
    finite = np.isfinite(data)
    bad = data.size - int(np.count_nonzero(finite))
    if bad:
        fraction = bad / data.size
        if fraction > MAX_NONFINITE_FRACTION:
            raise _bad(path, f"{fraction:.1%} of voxels are NaN or infinite")
        LOGGER.warning("%s: %d NaN or infinite voxel(s) set to 0", path, bad)
        data[~finite] = 0
    low, high = float(data.min()), float(data.max())
    if low == high:
        what = "all zero" if high == 0 else f"constant ({high:g})"
        raise _bad(path, f"image data are {what}")
    return data


def implausibilities(img: nib.Nifti1Image) -> list[str]:
    """What about a loadable image (from :func:`load_t2w`) no infant head scan can be: voxel
    sizes, field of view and head size outside the ``PLAUSIBLE_*`` bounds, one sentence each
    (empty when plausible). Warnings, not errors: a rare scan may be right and odd."""
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    shape = np.asarray(img.shape[:3])
    problems = []
    smallest, in_plane, thickness = np.sort(zooms)
    low, plane_max, thick_max = PLAUSIBLE_VOXEL_MM
    too = [f"below {low:g} mm" if smallest < low else "",
           f"above {plane_max:g} mm in-plane" if in_plane > plane_max else "",
           f"slices thicker than {thick_max:g} mm" if thickness > thick_max else ""]
    if any(too):
        problems.append(f"voxels {_mm(zooms, '.2f')} mm ({', '.join(t for t in too if t)}): "
                        "not an infant head scan, or a header in other units")
    fov = shape * zooms
    low, high = PLAUSIBLE_FOV_MM
    if fov.min() < low or fov.max() > high:
        problems.append(f"field of view {_mm(fov)} mm is outside {low:g}-{high:g} mm along "
                        "some axis: not an infant head, or wrong voxel sizes")
    head = head_extent_mm(np.asanyarray(img.dataobj), zooms)
    low, high = PLAUSIBLE_HEAD_MM
    if head is not None and (head.max() < low or head.min() > high):
        problems.append(f"the head measures {_mm(head)} mm, not the size of an infant head "
                        f"(longest side at least {low:g} mm, shortest at most {high:g} mm): "
                        "wrong voxel sizes, or not an infant")
    return problems


def head_extent_mm(data: np.ndarray, zooms: np.ndarray) -> np.ndarray | None:
    """Extent in mm along each voxel axis of what is brighter than a tenth of the bright
    tissue (99th percentile); slabs with only a few such voxels (noise) do not count. None
    for an image without contrast."""
    sample = data[::2, ::2, ::2]
    bright = float(np.percentile(sample, 99))
    if not bright > float(sample.min()):
        return None
    foreground = data > 0.1 * bright
    extents = []
    for axis in range(3):
        counts = foreground.sum(axis=tuple(a for a in range(3) if a != axis))
        inside = np.flatnonzero(counts >= max(5, 0.02 * counts.max()))
        extents.append(0 if inside.size == 0 else inside[-1] - inside[0] + 1)
    return np.asarray(extents) * zooms


def _mm(values: np.ndarray, fmt: str = ".0f") -> str:
    return " x ".join(format(float(v), fmt) for v in values)


def _float_header(img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The input's header (orientation codes, units, description) without intensity scaling."""
    header = nib.Nifti1Header.from_header(img.header)
    header.set_slope_inter(None, None)
    return header


def load_label_map(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Integer label array (int64, 3D) and affine of a ``_dseg`` image.

    Why strict: a float label map that is not exactly integral (resampled with interpolation)
    or holds negative values would be silently truncated into wrong labels. A 4D image with
    one volume is squeezed to 3D. Raises :class:`BadImageError`.
    """
    path = Path(path)
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear message
        raise _bad(path, f"label map cannot be read ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _bad(path, f"label map is not 3D (shape {data.shape})")
    if data.dtype.kind == "f" and (not np.all(np.isfinite(data))
                                   or not np.array_equal(data, np.round(data))):
        raise _bad(path, "label map holds non-integer values")
    if data.min() < 0:
        raise _bad(path, "label map holds negative values")
    return data.astype(np.int64), img.affine
