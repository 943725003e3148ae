"""The data side of the reliability suite: bad archives, wrong digests, bad labels and columns,
missing files, crafted checkpoints and adapters, killed and concurrent preparations.

Every case asserts the exception type or exit code, a message naming the input and the
problem, that the error comes quickly (``BOUND`` seconds, generous for a loaded CI machine;
measured ~3 s for a CLI case, most of it importing torch), and that nothing was created or
changed (a snapshot of the whole test folder before and after). Command-line cases run
``python -m cptlib.cli data ...`` in a subprocess: exit code 2 and one line on stderr.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cptlib.data import load, remove_stale_partials
from cptlib.data.download import MARKER, DataError, is_complete
from cptlib.data.fakes import fake_archive, pack, write_fake
from cptlib.data.prepare import prepare, trusted_digests_path

BOUND = 20.0  # seconds before the error, at most (a CLI case imports torch: ~3 s idle, 8 s loaded)
WB = "waterbird_complete95_forest2water2.tar.gz"
WB_DIR = WB.removesuffix(".tar.gz")
ROOT = Path(__file__).resolve().parents[1]


def snapshot(top: Path) -> dict[str, str]:
    """Every path under ``top`` with a digest of its content (folders: ``dir``)."""
    return {str(p.relative_to(top)): "dir" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(top.rglob("*"))}


def cli(*args: str, timeout: float = 60.0) -> tuple[int, str, float]:
    """``python -m cptlib.cli ARGS`` with this test's environment: (exit code, stderr, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "cptlib.cli", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout, check=False)
    return out.returncode, out.stderr, time.monotonic() - start


# --------------------------------------------------------------------------- bad archives


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _zip(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr(name, b"x")
    return buf.getvalue()


def _valid(tmp: Path) -> bytes:
    return fake_archive("waterbirds", tmp / "valid" / WB).read_bytes()


ARCHIVES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "random bytes": (lambda tmp: os.urandom(4096), "not a zip or tar archive"),
    "empty file": (lambda tmp: b"", "not a zip or tar archive"),
    "gzip of random bytes": (lambda tmp: gzip.compress(os.urandom(4096)),
                             "not a zip or tar archive"),
    "truncated tar.gz": (lambda tmp: _valid(tmp)[: len(_valid(tmp)) // 2], "truncated"),
    "truncated zip": (lambda tmp: _zip("a.txt")[:-30], "not a zip or tar archive"),
    "tar member ..": (lambda tmp: _tar((_member("../evil.txt"), b"x")), "unsafe archive"),
    "tar absolute member": (lambda tmp: _tar((_member("/tmp/evil.txt"), b"x")), "absolute path"),
    "tar symlink out": (lambda tmp: _tar((_member("data/l", tarfile.SYMTYPE, "../../x"), b"")),
                        "points outside"),
    "tar device file": (lambda tmp: _tar((_member("data/dev", tarfile.CHRTYPE), b"")),
                        "device or special file"),
    "zip member ..": (lambda tmp: _zip("../evil.txt"), "leaves the target"),
    "no metadata.csv": (lambda tmp: _tar((_member("data/readme.txt"), b"hi")), "metadata.csv"),
}


def _bad_archive(tmp_path: Path, kind: str) -> Path:
    archive = tmp_path / "in" / WB  # the published name: no digest yet, so it reaches extraction
    archive.parent.mkdir()
    archive.write_bytes(ARCHIVES[kind][0](tmp_path / "build"))
    (tmp_path / "data").mkdir()
    return archive


@pytest.mark.parametrize("kind", list(ARCHIVES))
def test_bad_archive_is_a_value_error_naming_it_and_leaves_nothing(tmp_path, kind):
    archive = _bad_archive(tmp_path, kind)
    before = snapshot(tmp_path)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        prepare("waterbirds", tmp_path / "data" / "wb", source=str(archive), progress=False)
    assert time.monotonic() - start < BOUND and isinstance(err.value, ValueError)
    assert archive.name in str(err.value) and ARCHIVES[kind][1] in str(err.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["random bytes", "truncated tar.gz", "tar member .."])
def test_cli_bad_archive_is_one_line_exit_2_and_leaves_nothing(tmp_path, kind):
    archive = _bad_archive(tmp_path, kind)
    before = snapshot(tmp_path)
    rc, err, seconds = cli("data", "waterbirds", "--root", str(tmp_path / "data" / "wb"),
                           "--source", str(archive))
    assert rc == 2 and seconds < BOUND, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert archive.name in err and ARCHIVES[kind][1] in err, err
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- bad metadata


def _edit_metadata(text: str, column: str, row: int, value: str) -> str:
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _drop_column(text: str, column: str) -> str:
    rows = [line.split(",") for line in text.splitlines()]
    i = rows[0].index(column)
    return "\n".join(",".join(r[:i] + r[i + 1:]) for r in rows) + "\n"


METADATA: dict[str, tuple[Callable[[str], str | bytes], str]] = {
    "label 1.5": (lambda t: _edit_metadata(t, "y", 3, "1.5"), "column 'y' must hold integers"),
    "text label": (lambda t: _edit_metadata(t, "y", 0, "bird"), "column 'y'"),
    "label out of range": (lambda t: _edit_metadata(t, "y", 5, "2"), "data row 6 has 2"),
    "negative attribute": (lambda t: _edit_metadata(t, "place", 1, "-1"), "column 'place'"),
    "blank split": (lambda t: _edit_metadata(t, "split", 2, ""), "metadata.csv"),
    "missing column": (lambda t: _drop_column(t, "place"), "lacks column(s) ['place']"),
    "binary metadata": (lambda t: os.urandom(2048), "not a readable table"),
    "empty metadata": (lambda t: b"", "not a readable table"),
}


def _archive_with_metadata(tmp: Path, edit: Callable[[str], str | bytes]) -> Path:
    folder = write_fake("waterbirds", tmp / "tree")
    (folder / MARKER).unlink()
    meta = folder / "metadata.csv"
    new = edit(meta.read_text())
    meta.write_bytes(new.encode() if isinstance(new, str) else new)
    return pack(folder, tmp / "in" / WB, prefix=WB_DIR)


@pytest.mark.parametrize("kind", list(METADATA))
def test_bad_labels_and_tables_are_refused_naming_file_and_column(tmp_path, kind):
    edit, problem = METADATA[kind]
    archive = _archive_with_metadata(tmp_path / "build", edit)
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        prepare("waterbirds", tmp_path / "data" / "wb", source=str(archive), progress=False)
    assert time.monotonic() - start < BOUND
    message = str(err.value)
    assert "metadata.csv" in message and problem in message, message
    assert "\n" not in message
    assert isinstance(err.value, ValueError)  # the CLI's one-line, exit-2 kind
    assert snapshot(tmp_path) == before


def test_cli_label_error_is_one_line(tmp_path):
    archive = _archive_with_metadata(tmp_path / "build", METADATA["label 1.5"][0])
    rc, err, seconds = cli("data", "waterbirds", "--root", str(tmp_path / "wb"),
                           "--source", str(archive))
    assert rc == 2 and seconds < BOUND and len(err.strip().splitlines()) == 1, err
    assert "metadata.csv" in err and "'y'" in err and "1.5" in err


def test_a_missing_image_is_named(tmp_path):
    folder = write_fake("waterbirds", tmp_path / "build" / "tree")
    (folder / MARKER).unlink()
    next(folder.rglob("*.jpg")).unlink()
    archive = pack(folder, tmp_path / "in" / WB, prefix=WB_DIR)
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="image file"):
        prepare("waterbirds", tmp_path / "data" / "wb", source=str(archive), progress=False)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("missing", ["metadata.csv", "list_eval_partition"])
def test_loading_a_folder_with_a_missing_table_names_it(tmp_path, missing):
    name = "waterbirds" if missing == "metadata.csv" else "celeba"
    root = write_fake(name, tmp_path / name)
    for path in root.glob(f"{missing}*"):
        path.unlink()
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=missing):
        load(name, root, "train")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- digests


def test_cli_trusted_digest_mismatch_stops_before_extraction(tmp_path):
    root = tmp_path / "data" / "wb"
    first = fake_archive("waterbirds", tmp_path / "a" / WB)
    prepare("waterbirds", root, source=str(first), progress=False)  # trusted on first use
    record = trusted_digests_path(root)
    assert record.is_file()
    other = fake_archive("waterbirds", tmp_path / "b" / WB, seed=1)
    os.rename(root, tmp_path / "moved-away")
    before = snapshot(tmp_path)
    rc, err, seconds = cli("data", "waterbirds", "--root", str(root), "--source", str(other))
    assert rc == 2 and seconds < BOUND and len(err.strip().splitlines()) == 1, err
    assert str(other) in err and "mismatch" in err and str(record) in err
    assert snapshot(tmp_path) == before  # nothing extracted, the file kept
    # --no-verify installs it, says so, and the marker records it.
    rc, err, _ = cli("data", "waterbirds", "--root", str(root), "--source", str(other),
                     "--no-verify")
    assert rc == 0 and "--no-verify" in err
    assert '"no_verify": true' in (root / MARKER).read_text()


def test_cli_published_digest_mismatch_names_the_source(tmp_path):
    from cptlib.data.fakes import fake_release

    folder = tmp_path / "by-hand"
    fake_release("celeba", folder)
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    rc, err, seconds = cli("data", "celeba", "--root", str(tmp_path / "data" / "celeba"),
                           "--source", str(folder))
    assert rc == 2 and seconds < BOUND and len(err.strip().splitlines()) == 1, err
    assert "img_align_celeba.zip" in err and "TensorFlow Datasets" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, problem", [
    (["nope"], "unknown dataset 'nope'"),
    (["waterbirds", "--source", "/nonexistent/wb.tar.gz"], "/nonexistent/wb.tar.gz"),
    (["backbone", "--root", "/tmp/somewhere"], "--root does not apply"),
    (["synthetic", "--source", "x.tar.gz"], "--source applies to real datasets only"),
])
def test_cli_bad_arguments(tmp_path, args, problem):
    before = snapshot(tmp_path)
    rc, err, seconds = cli("data", *args)
    assert rc == 2 and seconds < BOUND and len(err.strip().splitlines()) == 1, err
    assert problem in err
    assert snapshot(tmp_path) == before


def test_unknown_file_name_cannot_be_verified(tmp_path):
    archive = fake_archive("waterbirds", tmp_path / "in" / "wb.tar.gz")
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r"wb\.tar\.gz: no digest is on record.*--no-verify"):
        prepare("waterbirds", tmp_path / "data" / "wb", source=str(archive), progress=False)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- crafted files


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("what", ["checkpoint", "adapter"])
def test_crafted_pickles_run_no_code(tmp_path, what):
    from test_train import run

    from cptlib.models import build_model, load_adapter
    from cptlib.train import TrainConfig

    marker, path = tmp_path / "marker", tmp_path / f"crafted.{what}"
    torch.save({"fingerprint": "x", "model": {}, "opt": _Payload(marker), "sched": {},
                "balancer": {}, "rng": torch.get_rng_state(), "state": {}}, path)
    before = snapshot(tmp_path)
    start = time.monotonic()
    with pytest.raises(ValueError, match=str(path)):
        if what == "checkpoint":
            run(TrainConfig(steps=4, eval_every=2), checkpoint=path)
        else:
            model = build_model("vit_tiny_patch16_224", 2, img_size=32, patch_size=8, depth=1,
                                embed_dim=48, num_heads=2, prompt_tokens=2)
            load_adapter(model, path)
    assert time.monotonic() - start < BOUND
    assert not marker.exists() and snapshot(tmp_path) == before


# --------------------------------------------------------------------------- processes

_SLOW_PUBLISH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cptlib.data.synthetic import MARKER, publish

    def fill(tmp):
        (tmp / "half.txt").write_text("half")
        print("filling", flush=True)
        time.sleep(float(sys.argv[2]))
        (tmp / "done.txt").write_text(sys.argv[3])
        (tmp / MARKER).write_text("{}")

    print("publishing", flush=True)
    publish(Path(sys.argv[1]), fill)
""")


def _publisher(root: Path, sleep: float, tag: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _SLOW_PUBLISH, str(root), str(sleep), tag],
                            env=env, stdout=subprocess.PIPE, text=True)


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial-*")) + sorted(folder.glob(".*.cpt-staging-*"))


def test_a_killed_preparation_is_cleaned_by_the_next(tmp_path):
    root = tmp_path / "data" / "syn"
    proc = _publisher(root, 60, "first")
    assert proc.stdout.readline().strip() == "publishing"
    assert proc.stdout.readline().strip() == "filling"
    assert remove_stale_partials(root.parent) == []  # live: its folder is kept
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _partials(root.parent)
    assert len(left) == 1 and not root.exists()
    from cptlib.data.synthetic import publish

    publish(root, lambda tmp: (tmp / "done.txt").write_text("second"))
    assert (root / "done.txt").read_text() == "second" and _partials(root.parent) == []


def test_remove_stale_partials_removes_only_dead_ones(tmp_path):
    folder = tmp_path / "data"
    (folder / ".wb.cpt-staging-abc").mkdir(parents=True)
    (folder / ".syn.partial-xyz" / "sub").mkdir(parents=True)
    (folder / "keep").mkdir()
    (folder / ".hidden-but-mine").mkdir()
    removed = remove_stale_partials(folder)
    assert sorted(p.name for p in removed) == [".syn.partial-xyz", ".wb.cpt-staging-abc"]
    assert sorted(p.name for p in folder.iterdir()) == [".hidden-but-mine", "keep"]


def test_a_real_preparation_clears_a_killed_staging_folder(tmp_path):
    root = tmp_path / "data" / "wb"
    stale = root.parent / ".wb.cpt-staging-dead"
    (stale / "half").mkdir(parents=True)
    prepare("waterbirds", root, source=str(fake_archive("waterbirds", tmp_path / "in" / WB)),
            progress=False)
    assert is_complete(root) and not stale.exists()


def test_two_concurrent_preparations_of_one_target(tmp_path):
    root = tmp_path / "data" / "syn"
    first = _publisher(root, 8, "first")
    assert [first.stdout.readline().strip() for _ in range(2)] == ["publishing", "filling"]
    second = _publisher(root, 0.1, "second")  # waits for the first's lock, never deletes it
    assert second.stdout.readline().strip() == "publishing"
    time.sleep(0.5)
    assert len(_partials(root.parent)) == 1 and first.poll() is None  # the second waits
    assert (_partials(root.parent)[0] / "half.txt").is_file()
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    assert (root / "done.txt").read_text() == "second"  # the later one replaced it whole
    assert (root / "half.txt").is_file() and _partials(root.parent) == []
