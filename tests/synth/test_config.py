"""The generator configuration: one JSON file, validated with errors that name the file and
the key, a digest of its canonical JSON, chosen by a training configuration and recorded in
the card of the model trained with it. (None of this existed before: the ranges and the
class table were code.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bids_infantseg import synth
from bids_infantseg.cli.main import main
from bids_infantseg.model.card import load_model
from bids_infantseg.synth.config import (
    DEFAULT,
    GENERATORS,
    GeneratorConfigError,
    load_generator,
)
from bids_infantseg.synth.sources import SourceError, SourceMix


def default_json() -> dict:
    return json.loads((GENERATORS / "default.json").read_text())


def write(tmp_path: Path, data: dict, name: str = "gen.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_the_default_holds_every_range_and_its_digest_is_of_the_canonical_json():
    data = default_json()
    assert DEFAULT.as_dict() == data
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert DEFAULT.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    assert DEFAULT.image.noise_sd == tuple(data["image"]["noise_sd"])
    assert DEFAULT.pose.training.rotation_deg == data["pose"]["training"]["rotation_deg"]
    assert [c.name for c in DEFAULT.classes] == [c["name"] for c in data["classes"]]
    record = DEFAULT.record()
    assert record == {"file": "default.json", "sha256": DEFAULT.digest(), "config": data}


def test_a_file_in_other_whitespace_has_the_same_digest(tmp_path):
    path = tmp_path / "spaced.json"
    path.write_text(json.dumps(default_json(), indent=7))
    assert load_generator(path).digest() == DEFAULT.digest()


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["image"].update(noise_sd=[0.04, 0.005]), "image.noise_sd"),
    (lambda d: d["image"].update(noise_sd="loud"), "image.noise_sd"),
    (lambda d: d["image"].update(random_contrast_probability=1.5),
     "image.random_contrast_probability"),
    (lambda d: d["pose"]["training"].update(spin_deg=3), "pose.training: unknown key(s) spin_deg"),
    (lambda d: d["head"].pop("fat_mm"), "head: missing key(s) fat_mm"),
    (lambda d: d["classes"][3].update(t2=[[6, 0.5], [0, 0.6]]), "classes[3].t2"),
    (lambda d: d["classes"][3].update(drawem9=2), "classes: names, order and outputs"),
])
def test_a_bad_file_is_one_error_naming_the_file_and_key(tmp_path, edit, key):
    data = default_json()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(GeneratorConfigError) as raised:
        load_generator(path)
    assert str(path) in str(raised.value) and key in str(raised.value)


def test_other_t2_curves_change_the_image_and_the_digest(tmp_path):
    data = default_json()
    data["classes"][3]["t2"] = [[0, 0.1]]
    other = load_generator(write(tmp_path, data))
    assert other.digest() != DEFAULT.digest()
    gen = np.full((8, 8, 8), 3, dtype=np.uint8)
    gen[:4] = 2
    images = [synth.synthesize_image(gen, np.random.default_rng(0), 0.0, 1.0,
                                     random_contrast=0.0, config=c) for c in (DEFAULT, other)]
    assert images[0][4:].mean() > images[0][:4].mean()  # newborn WM brighter than GM
    assert images[1][4:].mean() < images[1][:4].mean()


def training_config(tmp_path: Path, generator: str | None) -> Path:
    config = {"sources": [{"name": "procedural", "kind": "procedural", "weight": 1.0}]}
    if generator is not None:
        config["generator"] = generator
    return write(tmp_path, config, "training.json")


def test_a_training_config_names_its_generator_file(tmp_path):
    data = default_json()
    data["image"]["noise_sd"] = [0.0, 0.001]
    write(tmp_path, data, "quiet.json")
    mix = SourceMix.load(training_config(tmp_path, "quiet.json"))
    assert mix.generator.image.noise_sd == (0.0, 0.001)
    assert mix.describe()["generator"]["file"] == "quiet.json"
    assert SourceMix.load(training_config(tmp_path, None)).generator is DEFAULT
    with pytest.raises(SourceError, match="training.json: generator: .*missing.json"):
        SourceMix.load(training_config(tmp_path, "missing.json"))


def test_the_card_of_a_trained_model_records_the_generator(tmp_path):
    data = default_json()
    data["image"]["gamma_log_sd"] = 0.1
    write(tmp_path, data, "mine.json")
    config = training_config(tmp_path, "mine.json")
    assert main([str(config), str(tmp_path / "out"), "train", "-w", str(tmp_path / "work"),
                 "--nprocs", "1", "--device", "cpu", "--steps-per-epoch", "1", "--batch-size",
                 "2", "--eval-procedural", "1", "--shared-views", "--pretrained", "none",
                 "--num-filters", "4", "--grid-size", "32", "--voxel-size-mm", "6",
                 "--epochs-all", "1"]) == 0
    card = load_model(tmp_path / "out" / "models" / "drawem9-synth-starter").card
    recorded = card.training["data"]["generator"]
    assert recorded["file"] == "mine.json" and recorded["config"] == data
    assert recorded["sha256"] == load_generator(tmp_path / "mine.json").digest()


class Unconfigured:
    """A source written before generator configurations (``demo.Enlarged`` is one)."""

    def paint(self, p, rng, voxel_size, age_months):
        return synth.Procedural().paint(p, rng, voxel_size, age_months)


def test_a_source_without_config_still_paints_with_the_default():
    image, labels = synth.training_volume(np.random.default_rng(0), 3.0, (32, 32, 32), 5.0,
                                          anatomy=Unconfigured())
    assert image.shape == labels.shape == (32, 32, 32) and labels.max() > 0
