"""A slice viewer inside the report: every slice of three views, labels filled (40 % opaque)
or outlined, toggled per label, neurological or radiological, click to enlarge; one
self-contained block of HTML, no network.

Why a volume and not pre-rendered pictures: seven slices per view cannot show whether the
cortical ribbon is right, and a strip of every slice per view and per label layer would be
three times the data. The page instead carries the cropped T2w (8-bit, windowed) and the
label map (class numbers) once each, as PNGs of tiled axial slices (PNG compresses them
losslessly and every browser decodes it); a small script reads them back through a canvas
and draws any slice of any view with each enabled label filled, or outlined inside its own
region, at the screen's resolution, so a one-voxel ribbon stays visible when enlarged.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from bids_infantseg.model.labels import LabelSet
from bids_infantseg.report.colors import display_colors, rgb
from bids_infantseg.report.html import image_tag

MAX_VOXELS = 16_000_000
"""Voxels the page carries at most; a larger crop keeps every n-th voxel along each axis
(about 8 MB of page at worst; browsers handle a tile image of this many pixels)."""

VIEWS = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
"""View -> (axis through the slices, axis shown left to right, axis shown bottom to top)."""

MARKERS = {"axial": ("L", "R", "A", "P"), "coronal": ("L", "R", "S", "I"),
           "sagittal": ("P", "A", "S", "I")}
"""Orientation letters at the left, right, top and bottom edge of each view in neurological
convention (the subject's right on the right; RAS axes increase rightwards and upwards), the
page's default; the radiological toggle mirrors axial and coronal views and swaps L and R."""

FILL_OPACITY = 0.4
"""Opacity of filled labels, the default display: at a glance a filled region shows which
structure is where; the T2w still shows through, and outlines (a toggle) show edges."""

CONVENTIONS = {
    "neurological": "Neurological convention: the subject's right is on the right of the "
                    "axial and coronal views.",
    "radiological": "Radiological convention: the subject's right is on the left of the "
                    "axial and coronal views (as if facing the patient).",
}
"""The sentence the page states for each left-right convention (neurological by default)."""

JPEG_QUALITY = 90
"""The T2w is carried as JPEG: a noisy MRI barely compresses losslessly (PNG: 1.6 MB for a
real 0.8 mm infant head, 3 times the JPEG), and the picture need not be exact; the label map,
which must be, is a PNG."""


_SIDES = {"L": "subject's left", "R": "subject's right", "A": "anterior", "P": "posterior",
          "S": "superior", "I": "inferior"}


WINDOW_SAMPLES = 2_000_000
"""Voxels the display window's percentiles are taken from (a regular subsample)."""


@dataclass(frozen=True)
class ScanImages:
    """A scan's T2w and label map in RAS, cropped to the labelled head, with the brain mask
    and the grey-level window: read once for the report's slice viewer."""

    image: np.ndarray
    label_map: np.ndarray
    zooms: tuple[float, float, float]
    brain: np.ndarray
    window: tuple[float, float]
    origin: tuple[int, int, int] = (0, 0, 0)  # the crop's first voxel in the RAS volume
    file_slices: tuple[tuple[int, int], ...] = ((0, 1), (0, 1), (0, 1))
    """Per RAS axis: the image file's own voxel index of the crop's first slice, and +1 or -1
    per slice (-1 where the file's axis runs the other way): what the captions number."""

    @classmethod
    def load(cls, t2w: nib.Nifti1Image, dseg: nib.Nifti1Image, labels: LabelSet,
             margin: int = 4) -> ScanImages:
        """Both images reoriented to RAS first, so every scan is shown the same way round
        whatever its header's axis order; cropped to the labels (head or brain) plus
        ``margin`` voxels, so small brains in large fields of view fill the panels."""
        canonical = nib.as_closest_canonical(dseg)
        label_map = np.asanyarray(canonical.dataobj)
        image = np.asanyarray(nib.as_closest_canonical(t2w).dataobj, dtype=np.float32)
        box = ndimage.find_objects((label_map > 0).astype(np.uint8))
        origin = (0, 0, 0)
        if box:
            box = tuple(slice(max(0, b.start - margin), b.stop + margin) for b in box[0])
            image, label_map = image[box], label_map[box]
            origin = tuple(b.start for b in box)
        finite = image[np.isfinite(image) & (image > 0)]
        finite = finite[::max(1, finite.size // WINDOW_SAMPLES)]
        low, high = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
        file_slices = [(0, 1)] * 3
        for axis, (ras, direction) in enumerate(nib.io_orientation(dseg.affine)):
            start, last = origin[int(ras)], dseg.shape[axis] - 1
            file_slices[int(ras)] = (last - start, -1) if direction < 0 else (start, 1)
        return cls(image, label_map, tuple(float(z) for z in canonical.header.get_zooms()[:3]),
                   np.isin(label_map, labels.brain_indices), (float(low), float(high)),
                   origin, tuple(file_slices))


@dataclass(frozen=True)
class Volume:
    """What the page carries: tiled 8-bit T2w and class numbers, and how to read them."""

    t2w_jpeg: bytes
    labels_png: bytes
    shape: tuple[int, int, int]
    columns: int  # tiles per row of the PNGs
    step: int  # every step-th voxel of the crop (1 unless above MAX_VOXELS)
    zooms: tuple[float, float, float]  # mm between carried voxels


def _tiles(volume: np.ndarray, columns: int) -> np.ndarray:
    """Axial slices (x across, y down) side by side, ``columns`` per row of tiles."""
    nx, ny, nz = volume.shape
    rows = math.ceil(nz / columns)
    tiled = np.zeros((rows * ny, columns * nx), np.uint8)
    for k in range(nz):
        top, left = (k // columns) * ny, (k % columns) * nx
        tiled[top:top + ny, left:left + nx] = volume[:, :, k].T
    return tiled


def _encode(tiled: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiled, mode="L").save(buffer, **options)
    return buffer.getvalue()


def class_map(label_map: np.ndarray, labels: LabelSet) -> np.ndarray:
    """Label indices -> class numbers (uint8; unknown indices -> 0, the background's)."""
    if len(labels) > 256:
        raise ValueError(f"label set {labels.name!r}: the viewer shows at most 256 labels")
    indices = labels.indices.astype(np.int64)
    values = np.asarray(label_map, dtype=np.int64)
    lookup = np.zeros(max(int(values.max(initial=0)), int(indices.max())) + 1, np.uint8)
    lookup[indices[indices >= 0]] = np.flatnonzero(indices >= 0)
    return lookup[values.clip(0)]


def volume(source: ScanImages, labels: LabelSet, max_voxels: int = MAX_VOXELS) -> Volume:
    """The crop of ``source`` as the viewer's two PNGs."""
    step = max(1, math.ceil((source.label_map.size / max_voxels) ** (1 / 3)))
    while math.prod(math.ceil(n / step) for n in source.label_map.shape) > max_voxels:
        step += 1
    image = source.image[::step, ::step, ::step]
    low, high = source.window
    grey = np.clip((np.nan_to_num(image) - low) / max(high - low, 1e-6) * 255, 0, 255)
    classes = class_map(source.label_map[::step, ::step, ::step], labels)
    columns = max(1, math.ceil(math.sqrt(classes.shape[2] * classes.shape[1]
                                         / classes.shape[0])))
    return Volume(_encode(_tiles(np.round(grey).astype(np.uint8), columns), format="JPEG",
                          quality=JPEG_QUALITY, optimize=True),
                  _encode(_tiles(classes, columns), format="PNG", compress_level=9),
                  tuple(int(n) for n in classes.shape), columns, step,
                  tuple(z * step for z in source.zooms))


def _start(source: ScanImages, axis: int, step: int) -> int:
    """The middle of the brain along ``axis``, in carried voxels."""
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(source.brain.any(axis=other))
    middle = (present[0] + present[-1]) / 2 if present.size else source.brain.shape[axis] / 2
    return int(middle // step)


def legend(labels: LabelSet, colors: dict[int, str]) -> str:
    """One checkbox per label (background 0 left out): its colour (``colors``, those the
    views draw), name and abbreviation; brain labels start shown, non-brain ones hidden."""
    items = []
    for position, lab in enumerate(labels.labels):
        if lab.index == 0:
            continue
        checked = " checked" if lab.index in labels.brain_indices else ""
        items.append(
            f'<label class="lab"><input type="checkbox" data-class="{position}"{checked}>'
            f'<span class="swatch" style="background:{colors[lab.index]}"></span>'
            f"{html.escape(lab.name)} <small>({html.escape(lab.abbreviation)}, "
            f"{lab.index})</small></label>")
    return "".join(items)


def _view(name: str, data: Volume, start: int, file_slices: tuple[int, int]) -> str:
    """One view; its caption numbers a slice by the image file's own voxel index (the
    carried slice ``k`` is file slice ``first + k * step``), one number a user can find in
    any viewer."""
    axis = VIEWS[name][0]
    left, right, top, bottom = MARKERS[name]
    markers = "".join(f'<span class="ori {side}" title="{_SIDES[letter]}">{letter}</span>'
                      for side, letter in (("left", left), ("right", right), ("top", top),
                                           ("bottom", bottom)))
    last = data.shape[axis] - 1
    first, direction = file_slices
    return (f'<figure class="view" data-view="{name}" data-first="{first}" '
            f'data-step="{direction * data.step}">'
            f"<figcaption>{name} <output></output></figcaption>"
            f'<div class="frame"><canvas title="click: enlarge or shrink; wheel or slider: '
            f'move through the slices"></canvas>{markers}</div>'
            f'<input type="range" min="0" max="{last}" value="{min(start, last)}" '
            f'aria-label="{name} slice"></figure>')


STYLE = """
.viewer .tools{display:flex;flex-wrap:wrap;gap:4px 14px;align-items:center;margin:6px 0;
font-size:.9em}
.viewer .lab{white-space:nowrap;cursor:pointer}
.viewer .lab input{margin:0 4px 0 0;vertical-align:middle}
.viewer .views{display:flex;flex-wrap:wrap;gap:8px}
.viewer .view{flex:1 1 300px;margin:0;min-width:0}
.viewer .view.big{flex-basis:100%;order:-1}
.viewer figcaption{font-weight:600;color:#345;margin:2px 0}
.viewer figcaption output{font-weight:400;color:#555;font-size:.9em}
.viewer .frame{position:relative;display:inline-block;background:#000;line-height:0}
.viewer canvas{display:block;cursor:zoom-in}
.viewer .big canvas{cursor:zoom-out}
.viewer input[type=range]{width:100%;margin:4px 0}
.viewer .ori{position:absolute;color:#fff;font:700 14px/1 system-ui,sans-serif;
text-shadow:0 0 3px #000,0 0 3px #000;pointer-events:none}
.viewer .ori.left{left:4px;top:50%;transform:translateY(-50%)}
.viewer .ori.right{right:4px;top:50%;transform:translateY(-50%)}
.viewer .ori.top{top:4px;left:50%;transform:translateX(-50%)}
.viewer .ori.bottom{bottom:4px;left:50%;transform:translateX(-50%)}
.viewer .convention{font-weight:600}
"""

SCRIPT = r"""
(() => {
const root = document.getElementById("viewer");
const D = JSON.parse(document.getElementById("viewer-data").textContent);
const [nx, ny, nz] = D.shape, stride = [1, nx, nx * ny];
const AXES = {axial: [2, 0, 1], coronal: [1, 0, 2], sagittal: [0, 1, 2]};
const shown = new Uint8Array(D.colors.length), fillAlpha = Math.round(255 * D.fill);
let outline = false, radiological = false, t2 = null, lab = null;

function voxels(img) {  // tiled axial slices -> x-fastest volume (red channel)
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d", {willReadFrequently: true});
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data, out = new Uint8Array(nx * ny * nz);
  for (let k = 0; k < nz; k++) {
    const left = (k % D.columns) * nx, top = Math.floor(k / D.columns) * ny;
    for (let j = 0; j < ny; j++) {
      let p = 4 * ((top + j) * c.width + left);
      const o = nx * (j + ny * k);
      for (let i = 0; i < nx; i++, p += 4) out[o + i] = px[p];
    }
  }
  return out;
}

const views = [...root.querySelectorAll(".view")].map(fig => {
  const [axis, across, up] = AXES[fig.dataset.view];
  const side = s => fig.querySelector(".ori." + s);
  return {fig, axis, across, up, canvas: fig.querySelector("canvas"),
          slider: fig.querySelector("input"), out: fig.querySelector("output"),
          first: +fig.dataset.first, step: +fig.dataset.step,
          sides: [side("left"), side("right")].map(e => [e, e.textContent, e.title]),
          plane: document.createElement("canvas")};
});

function draw(v) {
  if (!t2) return;
  const na = D.shape[v.across], nu = D.shape[v.up], pos = +v.slider.value;
  const ratio = (nu * D.zooms[v.up]) / (na * D.zooms[v.across]);
  let cssW = v.fig.clientWidth, cssH = cssW * ratio;
  const maxH = v.fig.classList.contains("big") ? 0.85 * innerHeight : 0.6 * innerHeight;
  if (cssH > maxH) { cssH = maxH; cssW = cssH / ratio; }
  const dpr = devicePixelRatio || 1;
  const W = Math.max(1, Math.round(cssW * dpr)), H = Math.max(1, Math.round(cssH * dpr));
  const c = v.canvas;
  c.width = W; c.height = H; c.style.width = cssW + "px"; c.style.height = cssH + "px";
  const base = pos * stride[v.axis], sa = stride[v.across], su = stride[v.up];
  const mirror = radiological && v.across === 0;  // x across: axial and coronal
  const across = q => (mirror ? na - 1 - q : q) * sa;
  // the slice at its own size, smoothed by the browser when scaled
  v.plane.width = na; v.plane.height = nu;
  const pg = v.plane.getContext("2d"), small = pg.createImageData(na, nu);
  for (let r = 0; r < nu; r++) {
    const row = base + (nu - 1 - r) * su;
    for (let q = 0; q < na; q++) {
      const g = t2[row + across(q)], p = 4 * (r * na + q);
      small.data[p] = small.data[p + 1] = small.data[p + 2] = g; small.data[p + 3] = 255;
    }
  }
  pg.putImageData(small, 0, 0);
  const ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(v.plane, 0, 0, W, H);
  // each display pixel's class (nearest voxel), then each enabled label filled, or outlined
  // inside its own region
  const col = new Int32Array(W), rowOf = new Int32Array(H), cls = new Uint8Array(W * H);
  for (let x = 0; x < W; x++) col[x] = across(Math.min(na - 1, Math.floor((x + 0.5) * na / W)));
  for (let y = 0; y < H; y++)
    rowOf[y] = base + (nu - 1 - Math.min(nu - 1, Math.floor((y + 0.5) * nu / H))) * su;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) cls[y * W + x] = lab[rowOf[y] + col[x]];
  const lw = Math.max(1, Math.min(Math.round(Math.min(W, H) / 400), Math.floor(W / na / 3)));
  const over = ctx.createImageData(W, H), o = over.data;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const i = y * W + x, k = cls[i];
    if (!shown[k]) continue;
    let edge = !outline;
    for (let d = 1; d <= lw && !edge; d++)
      edge = (x >= d && cls[i - d] !== k) || (x + d < W && cls[i + d] !== k)
          || (y >= d && cls[i - d * W] !== k) || (y + d < H && cls[i + d * W] !== k);
    if (!edge) continue;
    const [r, g, b] = D.colors[k], p = 4 * i;
    o[p] = r; o[p + 1] = g; o[p + 2] = b; o[p + 3] = outline ? 255 : fillAlpha;
  }
  const layer = document.createElement("canvas");
  layer.width = W; layer.height = H;
  layer.getContext("2d").putImageData(over, 0, 0);
  ctx.drawImage(layer, 0, 0);
  v.out.textContent = `slice ${v.first + pos * v.step}`;
  for (const [e, letter, title] of v.sides) {  // radiological: L and R change places
    const [other, otherTitle] = v.sides.find(s => s[0] !== e).slice(1);
    e.textContent = mirror ? other : letter; e.title = mirror ? otherTitle : title;
  }
}

const drawAll = () => views.forEach(draw);
for (const box of root.querySelectorAll("input[data-class]")) {
  shown[+box.dataset.class] = box.checked ? 1 : 0;
  box.addEventListener("change", () => { shown[+box.dataset.class] = box.checked ? 1 : 0;
                                          drawAll(); });
}
for (const mode of root.querySelectorAll("input.mode"))
  mode.addEventListener("change", () => { outline = mode.value === "outline" && mode.checked;
                                          drawAll(); });
const flipBox = root.querySelector("input.radiological"),
      convention = root.querySelector(".convention");
flipBox.addEventListener("change", () => {
  radiological = flipBox.checked;
  convention.textContent = D.conventions[radiological ? "radiological" : "neurological"];
  drawAll();
});
for (const button of root.querySelectorAll("button[data-all]"))
  button.addEventListener("click", () => {
    for (const box of root.querySelectorAll("input[data-class]"))
      box.checked = button.dataset.all === "1";
    root.querySelectorAll("input[data-class]").forEach(b => {
      shown[+b.dataset.class] = b.checked ? 1 : 0; });
    drawAll();
  });
for (const v of views) {
  v.slider.addEventListener("input", () => draw(v));
  v.canvas.addEventListener("click", () => {
    v.fig.classList.toggle("big");
    drawAll();
    v.fig.scrollIntoView({block: "nearest"});
  });
  v.canvas.addEventListener("wheel", e => {  // small views let the page scroll
    if (!v.fig.classList.contains("big")) return;
    e.preventDefault();
    v.slider.value = +v.slider.value + (e.deltaY > 0 ? -1 : 1);
    draw(v);
  }, {passive: false});
}
addEventListener("resize", drawAll);
for (const v of views)  // report.html#coronal opens with that view enlarged
  v.fig.classList.toggle("big", location.hash === "#" + v.fig.dataset.view);
const images = [document.getElementById("viewer-t2w"), document.getElementById("viewer-labels")];
Promise.all(images.map(img => img.decode())).then(() => {
  t2 = voxels(images[0]); lab = voxels(images[1]);
  drawAll();
  root.dataset.ready = "1";
}).catch(err => { root.querySelector(".status").textContent = "viewer failed: " + err; });
window.bidsInfantsegViewer = {views, draw, drawAll, get t2() { return t2; },
                              get labels() { return lab; }};
})();
"""


def viewer(source: ScanImages, labels: LabelSet) -> str:
    """The viewer's HTML: controls, three views with orientation letters, the data and the
    script (``viewer`` ids: one viewer per page)."""
    data = volume(source, labels)
    colors = display_colors(labels)
    meta = {"shape": data.shape, "columns": data.columns, "step": data.step,
            "zooms": [round(z, 4) for z in data.zooms],
            "colors": [rgb(colors[lab.index]) for lab in labels.labels],
            "fill": FILL_OPACITY, "conventions": CONVENTIONS}
    views = "".join(_view(name, data, _start(source, axes[0], data.step),
                          source.file_slices[axes[0]]) for name, axes in VIEWS.items())
    return (
        f"<style>{STYLE}</style>"
        '<div class="viewer" id="viewer">'
        f'<div class="tools">{legend(labels, colors)}</div>'
        '<div class="tools"><span>labels '
        '<label><input type="radio" name="viewer-mode" class="mode" value="fill" checked> '
        f"filled ({FILL_OPACITY:.0%} opaque)</label> "
        '<label><input type="radio" name="viewer-mode" class="mode" value="outline"> '
        "outlined</label></span>"
        '<label><input type="checkbox" class="radiological"> radiological</label>'
        '<button type="button" data-all="1">show all</button>'
        '<button type="button" data-all="0">hide all</button></div>'
        f'<div class="tools"><span class="convention">{CONVENTIONS["neurological"]}</span>'
        "<span>Click a view to enlarge it (or open the page at #axial, #coronal, "
        "#sagittal); the slider, or the mouse wheel on an enlarged view, moves through the "
        "slices; a slice's number is its voxel index (from 0) along that axis of the image "
        "file, whatever the file's axis order.</span>"
        '<span class="status"></span></div>'
        f'<div class="views">{"".join(views)}</div>'
        + image_tag(data.t2w_jpeg, "T2w volume (tiled axial slices) for the viewer",
                    mime="image/jpeg", attrs='id="viewer-t2w" hidden')
        + image_tag(data.labels_png, "label volume (tiled axial slices) for the viewer",
                    attrs='id="viewer-labels" hidden')
        + '<script type="application/json" id="viewer-data">'
        + json.dumps(meta, separators=(",", ":")) + "</script>"
        + f"<script>{SCRIPT}</script>"
        + "<noscript><p class=\"warn\">The slice viewer needs JavaScript, which this "
          "browser has turned off.</p></noscript></div>"
    )
