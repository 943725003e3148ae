"""``cpt clean`` removes what killed or failed work left behind, never what live work holds."""

from __future__ import annotations

from cptlib import _io
from cptlib.cli import main as cli_main
from cptlib.runs.clean import clean


def _leftovers(results):
    profile = results / "smoke"
    (profile / "_failed" / "synthetic").mkdir(parents=True)
    (profile / "_failed" / "synthetic" / "abc.ipynb").write_text("{}")
    (profile / "synthetic" / "checkpoints").mkdir(parents=True)
    (profile / "text" / "checkpoints").mkdir(parents=True)
    (profile / "text" / "checkpoints" / "def.pt").write_bytes(b"resume me")
    stale = profile / "synthetic" / ".0123abcd.99.running.ipynb"
    live = profile / "synthetic" / ".4567ef01.98.running.ipynb"
    stale.write_text("{}")
    live.write_text("{}")
    (profile / ".locks").mkdir()
    (profile / ".locks" / "synthetic-0123abcd.lock").write_text("")
    return profile, stale, live


def test_clean_removes_stale_leftovers_only(tmp_path, isolated_cache):
    results = tmp_path / "results"
    profile, stale, live = _leftovers(results)
    with _io.exclusive_lock(profile / ".locks" / "synthetic-4567ef01.lock", "a live run"):
        assert set(clean(results, dry_run=True)) == set(clean(results, dry_run=True))
        removed = set(clean(results))
        assert profile / "_failed" in removed and stale in removed
        assert profile / "synthetic" / "checkpoints" in removed
        assert live.exists(), "a running run's partial notebook is kept"
        assert (profile / ".locks" / "synthetic-4567ef01.lock").exists()
    assert (profile / "text" / "checkpoints" / "def.pt").exists(), "a resumable checkpoint stays"
    assert not (profile / ".locks" / "synthetic-0123abcd.lock").exists()
    # once its run is gone, the partial notebook and its lock are leftovers too
    assert set(clean(results)) == {live, profile / ".locks" / "synthetic-4567ef01.lock"}


def test_cli_clean_dry_run_changes_nothing(tmp_path, isolated_cache, capsys):
    results = tmp_path / "results"
    profile, stale, live = _leftovers(results)
    before = sorted(p for p in results.rglob("*"))
    assert cli_main(["clean", "--results", str(results), "--dry-run"]) == 0
    assert sorted(p for p in results.rglob("*")) == before
    assert "would remove" in capsys.readouterr().out
    assert cli_main(["clean", "--results", str(results)]) == 0
    assert not stale.exists() and not live.exists()  # nothing holds their locks now

