"""Source configurations: held-out files never train, missing sources are errors, label maps
are drawn near their own age."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bids_infantseg.synth import FetalAtlas, LabelMap, Procedural
from bids_infantseg.synth.sources import SourceError, SourceMix, pick
from tests.synth.test_labelmaps import write_aseg

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "drawem9-synth-starter.json"


def write_config(path: Path, sources: list[dict], **ages) -> Path:
    path.write_text(json.dumps({"sources": sources, "ages": ages}))
    return path


@pytest.fixture
def aseg_dir(tmp_path) -> Path:
    folder = tmp_path / "asegs"
    folder.mkdir()
    for age, seed in ((1, 1), (6, 2), (12, 3)):
        write_aseg(folder / f"{age}mo.nii.gz", seed=seed)
    return folder


def aseg_source(**extra) -> dict:
    return {"name": "asegs", "kind": "label_map", "root": "asegs", "scheme": "freesurfer-aseg",
            "files": {"1mo.nii.gz": 1, "6mo.nii.gz": 6, "12mo.nii.gz": 12}, **extra}


def test_held_out_files_never_train_and_validate_alone(tmp_path, aseg_dir):
    config = write_config(tmp_path / "c.json", [{"kind": "procedural", "weight": 1},
                                                aseg_source(held_out=["6mo.nii.gz"])])
    train = SourceMix.load(config)
    held = SourceMix.load(config, held_out=True)
    names = [a.path.name for a in train.sources[1].anatomies]
    assert names == ["1mo.nii.gz", "12mo.nii.gz"]
    assert [s.name for s in held.sources] == ["asegs"]  # procedural holds nothing out
    assert [a.path.name for a in held.sources[0].anatomies] == ["6mo.nii.gz"]
    rng = np.random.default_rng(0)
    drawn = {type(train.draw(rng, 3.0)) for _ in range(40)}
    assert drawn == {Procedural, LabelMap}


@pytest.mark.parametrize(("change", "message"), [
    ({"root": "${NO_SUCH_VARIABLE}/asegs"}, "NO_SUCH_VARIABLE"),
    ({"root": "nowhere"}, "is not a folder"),
    ({"files": {"1mo.nii.gz": 1, "missing.nii.gz": 3}}, r"missing\.nii\.gz"),
    ({"held_out": ["other.nii.gz"]}, r"other\.nii\.gz"),
    ({"kind": "mesh"}, "unknown kind 'mesh'"),
])
def test_a_source_that_cannot_be_used_is_an_error(tmp_path, aseg_dir, change, message):
    config = write_config(tmp_path / "c.json", [aseg_source(**change)])
    with pytest.raises(SourceError, match=message):
        SourceMix.load(config)


@pytest.mark.parametrize("relative", [False, True])
def test_root_from_an_environment_variable(tmp_path, aseg_dir, monkeypatch, relative):
    """A variable's value is absolute or relative to the working directory (not to the
    config's folder, which a user does not think of when typing it)."""
    (tmp_path / "configs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MY_DATA", "." if relative else str(tmp_path))
    config = write_config(tmp_path / "configs" / "c.json", [aseg_source(root="${MY_DATA}/asegs")])
    assert len(SourceMix.load(config).sources[0].anatomies) == 3


def test_label_maps_are_drawn_near_their_own_age(tmp_path, aseg_dir):
    config = write_config(tmp_path / "c.json", [aseg_source()], age_window_months=4)
    source = SourceMix.load(config).sources[0]
    rng = np.random.default_rng(0)
    assert {pick(source, rng, 0.0, 4.0).age_months for _ in range(20)} == {1.0}
    assert {pick(source, rng, 9.0, 4.0).age_months for _ in range(30)} == {6.0, 12.0}
    assert {pick(source, rng, 30.0, 4.0).age_months for _ in range(5)} == {12.0}  # nearest


def test_newborn_share_of_ages(tmp_path, aseg_dir):
    config = write_config(tmp_path / "c.json", [aseg_source()], newborn_share=0.5)
    mix, rng = SourceMix.load(config), np.random.default_rng(1)
    ages = np.array([mix.draw_age(rng) for _ in range(400)])
    assert 0.5 < (ages < 1.5).mean() < 0.65 and ages.max() <= 12.0


def test_the_repository_config_holds_out_the_documented_split(monkeypatch, atlases, aseg_root):
    monkeypatch.setenv("BIDS_INFANTSEG_DATA", str(aseg_root.parent))
    train = SourceMix.load(REPO_CONFIG)
    held = SourceMix.load(REPO_CONFIG, held_out=True)

    def names(mix):
        return {getattr(a, "path", getattr(a, "folder", None)).name
                for s in mix.sources for a in s.anatomies if not isinstance(a, Procedural)}

    assert names(held) == {"2mo_aseg.nii.gz", "8mo_aseg.nii.gz", "fetal_SB_atlas_GA23_notoperated",
                           "fetal_SB_atlas_GA27_operated", "fetal_SB_atlas_GA31_operated"}
    assert not names(held) & names(train)
    assert len(names(train)) == 9 + 12
    assert any(isinstance(a, FetalAtlas) for s in train.sources for a in s.anatomies)
