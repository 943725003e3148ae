"""The study's one file writer: atomic, unique temporary names, strict JSON, umask-respecting."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from cptlib import _io


def test_atomic_writes_leave_files_readable_as_the_umask_says(tmp_path):
    old = os.umask(0o022)
    try:
        path = _io.atomic_write(tmp_path / "x.json", "{}\n")
        bytes_path = _io.atomic_write(tmp_path / "y.bin", lambda p: p.write_bytes(b"1"))
    finally:
        os.umask(old)
    for p in (path, bytes_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.json", "y.bin"]


def test_strict_json_turns_nan_into_null_and_a_failed_write_keeps_the_old_file(tmp_path,
                                                                              monkeypatch):
    path = _io.write_json(tmp_path / "r.json", {"a": math.nan, "b": [1.0, math.inf]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    old = path.read_bytes()

    def crash(*_args):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        _io.write_json(path, {"a": 2})
    monkeypatch.undo()
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_corrupt_json_file_is_named_with_what_to_do(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="x.json is not valid JSON .* delete it"):
        _io.read_json(bad)
