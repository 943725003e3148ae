"""Shared fixtures: caches and data folders that a test may write without touching the user's."""

from __future__ import annotations

import pytest


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """``$CPT_CACHE`` and ``$CPT_DATA`` in the test's own folder."""
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CPT_DATA", str(tmp_path / "data"))
    return tmp_path
