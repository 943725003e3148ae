"""The download path of the real datasets, end to end against a loopback HTTP server.

The server (127.0.0.1, a free port) serves tiny archives in the real layouts written by
``cptlib.data.fakes``, honours Range requests, and can drop a connection part-way or answer with
a web page. No other address is ever contacted: every source is redirected to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cptlib.data import load, sources
from cptlib.data.download import (
    MARKER,
    DataError,
    download,
    is_complete,
    read_marker,
    safe_extract,
    show_progress,
)
from cptlib.data.fakes import fake_archive, fake_release, write_fake
from cptlib.data.prepare import prepare, trusted_digests_path

WB = "waterbird_complete95_forest2water2.tar.gz"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv, name = self.server, self.path.lstrip("/")
        srv.log.append((name, self.headers.get("Range")))
        if name not in srv.files:
            self.send_error(404)
            return
        data, start = srv.files[name], 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        kind = "text/html" if name.endswith(".page") else "application/octet-stream"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.drop_once.pop(name, None)
        self.wfile.write(body if cut is None else body[: int(len(body) * cut)])

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.drop_once: dict[str, float] = {}  # file -> fraction sent before hanging up, once
        self.log: list[tuple[str, str | None]] = []

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _serve_waterbirds(server: _Server, tmp_path: Path) -> bytes:
    data = fake_archive("waterbirds", tmp_path / "src" / WB).read_bytes()
    server.files[WB] = data
    return data


def _redirect(monkeypatch: pytest.MonkeyPatch, name: str, *urls: str,
              sha256: str | None = None) -> None:
    """Point the first release of ``name`` at ``urls`` (one file), with a known digest or not."""
    src = sources.get(name)
    part = dataclasses.replace(src.releases[0][0], urls=urls, sha256=sha256, md5=None)
    monkeypatch.setitem(sources.SOURCES, name, dataclasses.replace(src, releases=((part,),)))


def _without_digests(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Forget the published digests of ``name`` (the fakes cannot match them)."""
    src = sources.get(name)
    releases = tuple(tuple(dataclasses.replace(p, sha256=None, md5=None, size=None) for p in r)
                     for r in src.releases)
    monkeypatch.setitem(sources.SOURCES, name, dataclasses.replace(src, releases=releases))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


# --------------------------------------------------------------------------- success


def test_prepare_downloads_verifies_and_marks(server, tmp_path, monkeypatch):
    data = _serve_waterbirds(server, tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    _redirect(monkeypatch, "waterbirds", server.url(WB), sha256=digest)
    root = prepare("waterbirds", tmp_path / "data" / "waterbirds", progress=False)

    ds = load("waterbirds", root, "train")
    assert ds.group_counts.tolist() == [4, 4, 4, 4]
    record = read_marker(root)
    assert record["files"][0]["sha256"] == digest and record["files"][0]["sha256_known"]
    assert record["splits"]["test"]["n"] == 16
    assert _leftovers(tmp_path / "data") == ["waterbirds"]  # no downloads, no staging left
    requests = len(server.log)
    assert prepare("waterbirds", root, progress=False) == root  # already done: no request
    assert len(server.log) == requests


def test_unknown_digest_is_trusted_on_first_use_then_held_to(server, tmp_path, capsys):
    data = _serve_waterbirds(server, tmp_path)
    root = prepare("waterbirds", tmp_path / "wb", source=server.url(WB), progress=False)
    digest = hashlib.sha256(data).hexdigest()
    err = capsys.readouterr().err
    assert "trust on first use" in err and digest in err
    entry = read_marker(root)["files"][0]
    assert entry["sha256"] == digest and not entry["sha256_known"]
    assert entry["origin"] == server.url(WB) and entry["verified_against"] == "first use"
    seen = json.loads(trusted_digests_path(root).read_text())
    assert seen[WB]["sha256"] == digest and seen[WB]["size"] == len(data)
    # Prepared again (the folder deleted), a different archive under that name is refused.
    shutil.rmtree(root)
    server.files[WB] = fake_archive("waterbirds", tmp_path / "other" / WB, seed=1).read_bytes()
    with pytest.raises(DataError, match=r"mismatch .*expected .*first use"):
        prepare("waterbirds", root, source=server.url(WB), progress=False)
    assert not root.exists()
    assert (tmp_path / ".wb.cpt-downloads" / WB).is_file()  # kept for inspection


def test_mirror_folder_url_fetches_every_file_by_name(server, tmp_path, monkeypatch):
    _without_digests(monkeypatch, "multinli")
    for path in fake_release("multinli", tmp_path / "release"):
        server.files[path.name] = path.read_bytes()
    root = prepare("multinli", tmp_path / "mnli", source=server.url(), progress=False)
    fake = write_fake("multinli", tmp_path / "expected")
    got, want = load("multinli", root, "val"), load("multinli", fake, "val")
    assert [got[i] for i in range(len(got))] == [want[i] for i in range(len(want))]
    assert {name for name, _ in server.log} == {"metadata_random.csv", "multinli_1.0.zip"}


def test_web_page_answer_falls_through_to_next_mirror(server, tmp_path):
    server.files["quota.page"] = b"<html>quota exceeded</html>"
    server.files["f.bin"] = b"x" * 1000
    used = download([server.url("quota.page"), server.url("f.bin")], tmp_path / "f.bin",
                    progress=False)
    assert used == server.url("f.bin") and (tmp_path / "f.bin").read_bytes() == b"x" * 1000


# --------------------------------------------------------------------------- resume


def test_interrupted_transfer_resumes_from_part_file(server, tmp_path):
    data = bytes(range(256)) * 4000
    server.files["big.bin"] = data
    server.drop_once["big.bin"] = 0.4
    dest = tmp_path / "big.bin"
    with pytest.raises(DataError, match="run the same command again to resume"):
        download([server.url("big.bin")], dest, progress=False, retries=0)
    part = tmp_path / "big.bin.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(data)
    offset = part.stat().st_size

    download([server.url("big.bin")], dest, progress=False)
    assert server.log[-1] == ("big.bin", f"bytes={offset}-")
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not part.exists()


def test_prepare_resumes_a_dropped_connection(server, tmp_path, monkeypatch):
    data = _serve_waterbirds(server, tmp_path)
    server.drop_once[WB] = 0.5
    digest = hashlib.sha256(data).hexdigest()
    _redirect(monkeypatch, "waterbirds", server.url(WB), sha256=digest)
    root = prepare("waterbirds", tmp_path / "data" / "wb", progress=False)
    ranges = [r for name, r in server.log if name == WB]
    assert ranges[0] is None and ranges[1] is not None and int(ranges[1][6:-1]) > 0
    assert read_marker(root)["files"][0]["sha256"] == digest


# --------------------------------------------------------------------------- failures


def test_checksum_failure_leaves_nothing_behind(server, tmp_path, monkeypatch):
    data = _serve_waterbirds(server, tmp_path)
    server.files[WB] = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    _redirect(monkeypatch, "waterbirds", server.url(WB), sha256=hashlib.sha256(data).hexdigest())
    parent = tmp_path / "data"
    with pytest.raises(DataError, match="SHA-256 mismatch") as err:
        prepare("waterbirds", parent / "waterbirds", progress=False)
    kept = parent / ".waterbirds.cpt-downloads" / WB
    assert str(kept) in str(err.value) and "kept for inspection" in str(err.value)
    assert _leftovers(parent) == [".waterbirds.cpt-downloads"]  # no target, marker or staging
    assert kept.read_bytes() == server.files[WB]


def test_offline_fails_at_once_with_urls_and_manual_steps(tmp_path, monkeypatch):
    urls = (_closed_port_url(WB), _closed_port_url("mirror/" + WB))
    _redirect(monkeypatch, "waterbirds", *urls)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        prepare("waterbirds", tmp_path / "data" / "waterbirds", progress=False)
    assert time.monotonic() - start < 3.0
    message = str(err.value)
    assert all(u in message for u in urls)
    assert "Manual steps" in message and "--source /path/to/" + WB in message
    assert _leftovers(tmp_path / "data") == []


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


def _symlink(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


UNSAFE = {
    "dotdot": lambda: _tar_with(tarfile.TarInfo("data/../../evil"), b"pwned"),
    "absolute": lambda: _tar_with(tarfile.TarInfo("/tmp/cpt-evil-absolute"), b"pwned"),
    "symlink": lambda: _tar_with(_symlink("data/link", "../../outside")),
    "hardlink": lambda: _tar_with(_symlink("data/hard", "../../etc/passwd", hard=True)),
    "device": lambda: _tar_with(_device("data/null")),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_tar_members_are_refused_before_writing(tmp_path, kind):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(UNSAFE[kind]())
    target = tmp_path / "out" / "target"
    with pytest.raises(DataError, match="unsafe archive"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []  # refused before anything was written
    assert not (tmp_path / "evil").exists() and not Path("/tmp/cpt-evil-absolute").exists()


def test_unsafe_zip_member_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/ok.txt", "ok")
        zf.writestr("../evil", "pwned")
    with pytest.raises(DataError, match="leaves the target"):
        safe_extract(archive, tmp_path / "target")
    assert not (tmp_path / "evil").exists()


def test_prepare_rejects_traversal_and_keeps_the_users_file(tmp_path):
    archive = tmp_path / WB  # a published name without a digest: trusted on first use, checked
    archive.write_bytes(UNSAFE["dotdot"]())
    parent = tmp_path / "data"
    with pytest.raises(DataError, match="unsafe archive"):
        prepare("waterbirds", parent / "waterbirds", source=str(archive), progress=False)
    assert archive.exists() and _leftovers(parent) == []


def test_archive_without_the_layout_is_refused(tmp_path):
    archive = tmp_path / WB
    archive.write_bytes(_tar_with(tarfile.TarInfo("data/readme.txt"), b"hi"))
    with pytest.raises(DataError, match="metadata.csv"):
        prepare("waterbirds", tmp_path / "data" / "wb", source=str(archive), progress=False)
    assert _leftovers(tmp_path / "data") == []


# --------------------------------------------------------------------------- local sources


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_source_local_archive(tmp_path, suffix):
    archive = fake_archive("celeba", tmp_path / f"celeba{suffix}")  # Kaggle layout, nested
    with pytest.raises(DataError, match="cannot be verified"):  # no digest for that name
        prepare("celeba", tmp_path / "celeba", source=str(archive), progress=False)
    root = prepare("celeba", tmp_path / "celeba", source=str(archive), progress=False,
                   verify=False)
    assert archive.exists() and is_complete(root)
    assert read_marker(root)["no_verify"] and not read_marker(root)["verified"]
    assert (root / "img_align_celeba" / "000001.jpg").is_file()  # Kaggle nesting flattened
    assert load("celeba", root, "test").group_counts.tolist() == [4, 4, 4, 4]


def test_source_folder_of_published_files(tmp_path, monkeypatch):
    _without_digests(monkeypatch, "celeba")
    folder = tmp_path / "by-hand"
    fake_release("celeba", folder)
    root = prepare("celeba", tmp_path / "celeba", source=str(folder), progress=False)
    assert (root / "list_attr_celeba.txt").is_file()
    assert load("celeba", root, "train").group_counts.tolist() == [4, 4, 4, 4]


@pytest.mark.parametrize("kept", ["size", "sha256", "md5"])
def test_each_published_digest_rejects_a_different_file(tmp_path, monkeypatch, kept):
    """Size, SHA-256 and MD5 are each checked (here one at a time), before any extraction."""
    src = sources.get("celeba")
    only = {k: None for k in ("size", "sha256", "md5") if k != kept}
    official = tuple(dataclasses.replace(p, **only) for p in src.releases[0])
    monkeypatch.setitem(sources.SOURCES, "celeba", dataclasses.replace(src, releases=(official,)))
    folder = tmp_path / "by-hand"
    fake_release("celeba", folder)
    label = {"size": "size", "sha256": "SHA-256", "md5": "MD5"}[kept]
    with pytest.raises(DataError, match=f"{label} mismatch for {folder}/img_align_celeba.zip"):
        prepare("celeba", tmp_path / "data" / "celeba", source=str(folder), progress=False)
    assert (folder / "img_align_celeba.zip").exists() and _leftovers(tmp_path / "data") == []
    root = prepare("celeba", tmp_path / "data" / "celeba", source=str(folder), progress=False,
                   verify=False)  # --no-verify installs it, and says so in the marker
    assert read_marker(root)["no_verify"]


def test_existing_copy_is_checked_and_marked_in_place(tmp_path):
    root = write_fake("isic", tmp_path / "isic")
    (root / MARKER).unlink()
    with pytest.raises(DataError, match="cpt data isic"):
        load("isic", root, "train")
    assert prepare("isic", root, source=str(root), progress=False) == root
    assert load("isic", root, "train").group_counts.tolist() == [4, 4, 4, 4]


def test_incomplete_copy_in_place_is_not_marked(tmp_path):
    root = write_fake("waterbirds", tmp_path / "wb")
    (root / MARKER).unlink()
    next(root.rglob("*.jpg")).unlink()
    with pytest.raises(DataError, match="image file"):
        prepare("waterbirds", root, source=str(root), progress=False)
    assert not is_complete(root)


def test_non_empty_unmarked_target_is_not_overwritten(tmp_path):
    target = tmp_path / "wb"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    archive = fake_archive("waterbirds", tmp_path / "wb.zip")
    with pytest.raises(DataError, match="not empty"):
        prepare("waterbirds", target, source=str(archive), progress=False)
    assert _leftovers(target) == ["notes.txt"]


def test_bad_names_and_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare("imagenet", tmp_path)
    with pytest.raises(DataError, match="neither an existing file"):
        prepare("waterbirds", tmp_path / "wb", source=str(tmp_path / "missing.tar.gz"))
    with pytest.raises(ValueError, match="--source"):
        prepare("synthetic", tmp_path / "s", source="x.tar.gz")


def test_default_root_is_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_DATA", str(tmp_path / "store"))
    archive = fake_archive("civilcomments", tmp_path / "civilcomments_v1.0.tar.gz")
    root = prepare("civilcomments", source=str(archive), progress=False)
    assert root == tmp_path / "store" / "civilcomments"
    assert len(load("civilcomments", split="val")) == 16


def test_progress_bars_only_on_a_terminal_outside_ci(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.delenv("CI", raising=False)
    assert show_progress(True) and not show_progress(False)
    monkeypatch.setenv("CI", "true")
    assert not show_progress(True)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.delenv("CI")
    assert not show_progress(True)


def test_the_data_layer_never_imports_the_models():
    """cptlib.data sits below cptlib.models (which reads data): no import may point upwards,
    so `cpt data backbone` is dispatched by the CLI to cptlib.models.quick_backbone."""
    import ast

    folder = Path(__file__).resolve().parents[1] / "cptlib" / "data"
    upward = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.name}: {n}" for n in names if n.startswith("cptlib.models")]
    assert upward == []
    with pytest.raises(ValueError, match="cpt data backbone"):
        prepare("backbone")
