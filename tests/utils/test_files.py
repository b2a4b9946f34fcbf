"""Atomic writes: the old file stays whole when writing fails; nothing temporary is left."""

from __future__ import annotations

import stat

import pytest

from bids_infantseg.utils.files import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "model.safetensors"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"old"))

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["model.safetensors"]


def test_mode_is_set_before_the_file_appears(tmp_path):
    target = atomic_write(tmp_path / "card.json", lambda tmp: tmp.write_text("{}"), 0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
