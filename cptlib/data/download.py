"""Downloads that survive real networks and hostile archives, and the completion marker.

The real datasets are large, hosted on servers that drop connections and move, and published
without checksums. This module gives resumable transfers (HTTP Range into a ``.part`` file),
SHA-256 / MD5 verification, extraction that refuses members escaping the target, and the
``.cpt-complete.json`` marker without which no loader takes a folder as a finished dataset.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from cptlib import __version__, _io
from cptlib._env import show_progress
from cptlib.paths import data_root

MARKER = ".cpt-complete.json"
CHUNK = 1 << 20
USER_AGENT = "cptlib-data/0.1 (+https://github.com/; dataset preparation)"


class DataError(ValueError, RuntimeError):
    """A dataset cannot be fetched, verified, extracted or read; the message says what to do.

    A ValueError, so that the ``cpt`` command prints it as one line with exit code 2 (bad input
    from the user's side: a file, a folder, a mirror); still a RuntimeError for older callers.
    """


class DownloadError(DataError):
    """No URL of a file answered; ``urls`` and ``reasons`` say which were tried and why."""

    def __init__(self, urls: Sequence[str], reasons: Sequence[str]) -> None:
        self.urls, self.reasons = list(urls), list(reasons)
        lines = "\n".join(f"  - {r}" for r in reasons)
        super().__init__(f"could not download from any of {len(self.urls)} URL(s):\n{lines}")


class _Unreachable(Exception):
    """This URL gave nothing usable (no connection, HTTP error, a web page): try the next one."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


# --------------------------------------------------------------------------- completion marker


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` holds a dataset whose preparation finished (its marker is readable)."""
    try:
        read_marker(root)
    except DataError:
        return False
    return True


def read_marker(root: str | Path) -> dict[str, Any]:
    """The completion record of ``root``; DataError when it is missing or unreadable."""
    path = Path(root) / MARKER
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{root} has no completion marker {MARKER}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable completion marker {path}: {exc}") from None
    if not isinstance(info, dict) or "name" not in info:
        raise DataError(f"completion marker {path} is not a cptlib record")
    return info


def write_marker(root: str | Path, name: str, **info: Any) -> Path:
    """Write ``root/.cpt-complete.json`` atomically (temporary file, then rename)."""
    root = Path(root)
    record = {"name": name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(),
              "cptlib_version": __version__, **info}
    return _io.write_json(root / MARKER, record, sort_keys=True)


def require_complete(root: str | Path, name: str) -> None:
    """Refuse a folder that ``cpt data`` has not finished, so a half-prepared copy is never used."""
    root = Path(root)
    if is_complete(root):
        return
    state = "does not exist" if not root.exists() else f"has no completion marker ({MARKER})"
    where = "" if root.absolute() == (data_root() / name).absolute() else f" --root {root}"
    adopt = (f"; if the files are already there, `cpt data {name} --root {root} --source "
             f"{root}` checks and marks them" if root.exists() else "")
    raise DataError(
        f"{name}: {root} {state}, so it is not a prepared dataset. Run `cpt data {name}{where}` "
        f"(or `python data_scripts/{name}.py{where}`) to download and prepare it{adopt}."
    )


# --------------------------------------------------------------------------- digests


def file_digests(path: str | Path) -> dict[str, Any]:
    """SHA-256, MD5 and size of a file, read once in chunks (archives are gigabytes)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "size": size}


def verify(path: str | Path, sha256: str | None = None, md5: str | None = None) -> dict[str, Any]:
    """Digests of ``path``; DataError naming both values when a known digest does not match."""
    got = file_digests(path)
    for kind, label, want in (("sha256", "SHA-256", sha256), ("md5", "MD5", md5)):
        if want and got[kind] != want.lower():
            raise DataError(
                f"{label} mismatch for {Path(path).name}: expected {want.lower()}, "
                f"got {got[kind]} ({got['size']} bytes): the file is corrupted or not the "
                "published one."
            )
    return got


# --------------------------------------------------------------------------- transfer



def download(
    urls: Sequence[str],
    dest: str | Path,
    *,
    progress: bool = True,
    timeout: float = 10.0,
    retries: int = 2,
) -> str:
    """Fetch ``dest`` from the first of ``urls`` that answers; returns that URL.

    Bytes go to ``dest.part`` first and resume from it with an HTTP Range request, so an
    interrupted multi-gigabyte transfer continues where it stopped (within this call up to
    ``retries`` times when the transfer made progress, or on the next call). A URL that cannot be
    reached fails at once (``timeout`` seconds at most, no retry loop) and the next is tried.
    """
    if not urls:
        raise ValueError("download needs at least one URL")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in urls:
        try:
            _fetch(url, dest, show_progress(progress), timeout, retries)
            return url
        except _Unreachable as exc:
            reasons.append(f"{url}: {exc}")
    raise DownloadError(urls, reasons)


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """Open ``url`` for the bytes from ``offset`` on; connection problems are _Unreachable."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _Unreachable(f"HTTP {exc.code} {exc.reason}", status=exc.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Unreachable(f"{getattr(exc, 'reason', exc)}") from None


def _resume_offset(resp: http.client.HTTPResponse, offset: int) -> int:
    """Where the body starts: ``offset`` if the server honoured the Range request, else 0."""
    if offset and resp.status == 206:
        match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            return offset
    return 0


def _fetch(url: str, dest: Path, bar: bool, timeout: float, retries: int) -> None:
    part = _part_path(dest)
    attempts = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, have, timeout)
        except _Unreachable as exc:
            if have and exc.status == 416:  # stale .part as long as the file or longer: restart
                part.unlink()
                continue
            raise
        with resp:
            if resp.headers.get_content_type() == "text/html" and dest.suffix != ".html":
                raise _Unreachable("answered with a web page instead of the file "
                                   "(a quota, sign-in or moved-file page?)")
            start = _resume_offset(resp, have)
            length = resp.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            got, clean = _stream(resp, part, start, total, dest.name, bar)
        size = part.stat().st_size
        if size == total or (total is None and clean):
            os.replace(part, dest)
            return
        attempts += 1
        if got == 0 or attempts > retries:
            raise DataError(
                f"transfer of {dest.name} from {url} stopped at {size} of "
                f"{total if total is not None else 'an unknown number of'} bytes; the "
                f"partial file {part} is kept: run the same command again to resume."
            )


def _stream(
    resp: Any, part: Path, start: int, total: int | None, label: str, bar: bool
) -> tuple[int, bool]:
    """Write the body into ``part`` from ``start`` on; returns (bytes received, ended cleanly)."""
    got, clean = 0, True
    with open(part, "r+b" if start and part.exists() else "wb") as f, tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=not bar, leave=False,
    ) as pbar:
        f.truncate(start)
        f.seek(start)
        try:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                got += len(chunk)
                pbar.update(len(chunk))
        except (OSError, http.client.HTTPException):
            clean = False  # a dropped connection: the caller resumes or reports
    return got, clean


# --------------------------------------------------------------------------- extraction


def archive_kind(path: str | Path) -> str | None:
    """``"zip"``, ``"tar"`` (any compression) or None, from the bytes rather than the name
    (mirrors such as CodaLab serve archives under names without a suffix)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError):
        pass
    return None


def _inside(target: Path, relative: str) -> bool:
    """Whether ``target/relative`` stays inside ``target`` once ``..`` are resolved."""
    joined = os.path.normpath(os.path.join(target, relative))
    return joined == str(target) or joined.startswith(str(target) + os.sep)


def _check_name(name: str, target: Path, archive: Path) -> None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise DataError(f"unsafe archive {archive.name}: member {name!r} has an absolute path")
    if ".." in PurePosixPath(posix).parts or not _inside(target, posix):
        raise DataError(f"unsafe archive {archive.name}: member {name!r} leaves the target folder")


def _check_link(name: str, link: str, target: Path, archive: Path, *, hard: bool) -> None:
    base = "" if hard else os.path.dirname(name.replace("\\", "/"))
    if os.path.isabs(link) or not _inside(target, os.path.join(base, link)):
        raise DataError(
            f"unsafe archive {archive.name}: link {name!r} -> {link!r} points outside the target"
        )


def _safe_tar_members(tf: tarfile.TarFile, target: Path, archive: Path) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        _check_name(m.name, target, archive)
        if m.issym() or m.islnk():
            _check_link(m.name, m.linkname, target, archive, hard=m.islnk())
        elif not (m.isfile() or m.isdir()):
            raise DataError(f"unsafe archive {archive.name}: member {m.name!r} is a device or "
                            "special file")
    return members


def _zip_link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    return zf.read(info).decode("utf-8", "replace") if stat.S_ISLNK(mode) else None


def safe_extract(archive: str | Path, target: str | Path, *, progress: bool = False) -> None:
    """Extract a zip or tar archive into ``target`` after checking every member.

    Refused before anything is written: absolute paths, ``..`` components, links whose target
    leaves ``target``, device files and FIFOs. Tar extraction also uses Python's ``data`` filter.
    """
    archive, target = Path(archive), Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        _extract(archive, target, progress)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"could not extract {archive.name} (truncated or corrupted?): {exc}") \
            from None


def _extract(archive: Path, target: Path, progress: bool) -> None:
    kind = archive_kind(archive)
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_name(info.filename, target, archive)
                link = _zip_link_target(zf, info)
                if link is not None:
                    _check_link(info.filename, link, target, archive, hard=False)
            for info in _bar(infos, archive.name, progress):
                zf.extract(info, target)
    elif kind == "tar":
        with tarfile.open(archive) as tf:
            members = _safe_tar_members(tf, target, archive)
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(target, members=_bar(members, archive.name, progress), **kwargs)
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive")


def _bar(items: Sequence[Any], label: str, progress: bool) -> Iterable[Any]:
    return tqdm(items, desc=f"extract {label}", unit="file", disable=not show_progress(progress),
                leave=False)
