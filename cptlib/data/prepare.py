"""``cpt data NAME``: make a dataset ready for ``cptlib.data.load``, whatever it takes.

Real datasets: obtain the published files (download with resume, a mirror, or local copies),
verify their digests, extract them safely into a staging folder next to the target, bring them
into the layout the loader reads, check that every split loads and every image exists, rename
the staging folder onto the target and only then write the completion marker. A failure leaves
no target folder, no marker and no staging folder (interrupted transfers keep their ``.part``
file, next to the target, so that the next run resumes). Embedded data (``synthetic``,
``synthetic-text``, ``backbone``) is generated instead.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptlib import _io
from cptlib.data import sources
from cptlib.data.download import (
    MARKER,
    DataError,
    DownloadError,
    archive_kind,
    download,
    file_digests,
    is_complete,
    safe_extract,
    write_marker,
)
from cptlib.data.partials import preparing, remove_stale_partials
from cptlib.paths import data_root

__all__ = ["DataError", "EMBEDDED", "REAL", "prepare", "remove_stale_partials"]

REAL = tuple(sources.SOURCES)
EMBEDDED = ("synthetic", "synthetic-text", "backbone")
_GENERATORS = {"synthetic": "cptlib.data.synthetic", "synthetic-text": "cptlib.data.synthetic_text"}
_MAX_DEPTH = 4  # how deep under the unpacked files a dataset folder is looked for


@dataclass(frozen=True)
class _File:
    """A published file at hand: where it is, where it came from, what it must hash to."""

    path: Path
    origin: str
    part: sources.Part | None
    downloaded: bool  # lives in our downloads folder (ours to delete), not the user's file


def prepare(
    name: str,
    root: str | Path | None = None,
    source: str | None = None,
    seed: int = 0,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Prepare dataset ``name`` in ``root`` (default ``data_root()/name``); returns the folder.

    ``source``: a mirror URL (one archive; or ending in ``/``, a folder holding the published
    files by name), a local archive or file, or a local folder (the published files, or an
    already extracted copy; ``--source`` equal to ``root`` checks a copy in place and marks it).
    ``seed`` only matters for the embedded datasets. ``verify=False`` (``--no-verify``) installs
    files whose digests differ from the record, saying so and noting it in the marker. Raises
    DataError (a ValueError) with what to do next.
    """
    if name == "backbone":
        raise ValueError("the embedded backbone is not a dataset of cptlib.data: prepare it with "
                         "`cpt data backbone` (cptlib.models.quick_backbone.prepare_backbone)")
    if name in EMBEDDED:
        return _embedded(name, root, source, seed, progress)
    if name not in REAL:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(REAL + EMBEDDED)}")
    target = (Path(root).expanduser() if root else data_root() / name).absolute()
    if is_complete(target):
        _say(f"{name} is already prepared in {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    local = Path(source).expanduser() if source and not _is_url(source) else None
    if local is not None and local.is_dir() and local.absolute() == target:
        return _adopt_in_place(name, target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(
            f"{target} exists, is not empty and is not a prepared {name} dataset (no {MARKER}). "
            f"Remove it or choose another --root; if it already holds the dataset, "
            f"`cpt data {name} --root {target} --source {target}` checks and marks it."
        )
    with preparing(target):  # a concurrent preparation of the same target waits for this one
        if is_complete(target):
            _say(f"{name} was prepared in {target} meanwhile")
            return target
        downloads = _downloads_dir(target)
        files = _obtain(name, source, target, downloads, progress)
        record = _install(name, files, target, progress, verify)
        write_marker(target, name, **record)
        _remember_digests(target, record["files"])
        shutil.rmtree(downloads, ignore_errors=True)
    _say(f"{name} is ready in {target}")
    return target


# --------------------------------------------------------------------------- embedded


def _embedded(name: str, root: str | Path | None, source: str | None, seed: int,
              progress: bool) -> Path:
    if source:
        raise ValueError(f"{name} is generated locally; --source applies to real datasets only")
    target = Path(root).expanduser() if root else data_root() / name
    result = importlib.import_module(_GENERATORS[name]).generate(target, seed=seed)
    return Path(result) if result is not None else target


# --------------------------------------------------------------------------- obtaining files


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "ftp", "file")


def _downloads_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.cpt-downloads"


def _say(message: str) -> None:
    print(f"cpt data: {message}", file=sys.stderr)


def _obtain(name: str, source: str | None, target: Path, downloads: Path,
            progress: bool) -> list[_File] | Path:
    """The published files (or an extracted copy: a folder) to install, per ``source``."""
    src = sources.get(name)
    if source is None:
        return _download_release(name, src.releases, downloads, target, progress)
    if _is_url(source):
        if source.endswith("/"):
            mirrored = tuple(tuple(sources.Part(p.filename, (source + p.filename,), p.sha256, p.md5)
                                   for p in release) for release in src.releases)
            return _download_release(name, mirrored, downloads, target, progress)
        filename = Path(urllib.parse.urlparse(source).path).name or f"{name}-source"
        part = sources.known_part(name, filename) or sources.Part(filename, ())
        single = sources.Part(part.filename, (source,), part.sha256, part.md5)
        return _download_release(name, ((single,),), downloads, target, progress)
    local = Path(source).expanduser()
    if local.is_file():
        return [_File(local, str(local.absolute()), sources.known_part(name, local.name), False)]
    if local.is_dir():
        return _local_folder(name, local)
    raise DataError(f"--source {source!r} is neither an existing file or folder nor a URL")


def _download_release(name: str, releases: tuple[tuple[sources.Part, ...], ...],
                      downloads: Path, target: Path, progress: bool) -> list[_File]:
    """Download every file of the first release whose hosts answer; fail at once otherwise."""
    reasons: list[str] = []
    for release in releases:
        try:
            return [_download_part(part, downloads, progress) for part in release]
        except DownloadError as exc:
            reasons += exc.reasons
    _remove_if_empty(downloads)
    tried = "\n".join(f"  - {r}" for r in reasons)
    raise DataError(f"{name}: no host answered (offline, or the files moved):\n{tried}\n\n"
                    f"{sources.manual_steps(name, target)}")


def _download_part(part: sources.Part, downloads: Path, progress: bool) -> _File:
    dest = downloads / part.filename
    if dest.is_file():  # complete from an earlier run that failed later: verified again below
        return _File(dest, f"earlier download ({', '.join(part.urls)})", part, True)
    _say(f"downloading {part.filename}")
    url = download(part.urls, dest, progress=progress)
    return _File(dest, url, part, True)


def _local_folder(name: str, folder: Path) -> list[_File] | Path:
    """A folder of by-hand downloads (every file of a release, by name) or an extracted copy."""
    for release in sources.get(name).releases:
        if all((folder / p.filename).is_file() for p in release):
            return [_File(folder / p.filename, str((folder / p.filename).absolute()), p, False)
                    for p in release]
    if _find_dataset(folder, sources.get(name).anchors) is not None:
        return folder
    expected = "; ".join(" + ".join(p.filename for p in r) for r in sources.get(name).releases)
    raise DataError(f"{folder} holds neither the published {name} files ({expected}) nor an "
                    f"extracted copy (one of {', '.join(sources.get(name).anchors)})")


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# --------------------------------------------------------------------------- installing


def trusted_digests_path(target: Path) -> Path:
    """Where the digests seen on first use of ``target`` are kept: beside the dataset folder."""
    return target.with_name(f"{target.name}.cpt-digests.json")


def _trusted(target: Path) -> dict[str, Any]:
    path = trusted_digests_path(target)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        raise DataError(f"unreadable digest record {path}: delete it to trust the next "
                        "download afresh") from None


def _remember_digests(target: Path, records: list[dict[str, Any]]) -> None:
    """Trust on first use: record the digests of verified-by-nobody files, atomically."""
    fresh = {r["filename"]: {k: r[k] for k in ("sha256", "size", "origin")}
             for r in records if r["verified_against"] == "first use"}
    if not fresh:
        return
    path = trusted_digests_path(target)
    _io.write_json(path, {**_trusted(target), **fresh}, sort_keys=True)
    for filename, info in fresh.items():
        _say(f"no published digest for {filename}: recorded SHA-256 {info['sha256']} "
             f"({info['size']} bytes) in {path} (trust on first use). Compare it with a copy you "
             "trust; later preparations of this folder are held to it.")


def _expected(f: _File, trusted: dict[str, Any], target: Path) -> tuple[dict[str, Any], str]:
    """The digests ``f`` must have and where they come from (empty: nothing is on record)."""
    part = f.part
    if part is not None and (part.sha256 or part.md5 or part.size):
        return ({"sha256": part.sha256, "md5": part.md5, "size": part.size},
                part.digest_source or "cptlib/data/sources.py")
    if part is not None and part.filename in trusted:
        seen = trusted[part.filename]
        return ({"sha256": seen["sha256"], "size": seen["size"]},
                f"first use, recorded in {trusted_digests_path(target)}")
    return {}, ""


def _check_digests(name: str, files: list[_File], target: Path, verify: bool
                   ) -> list[dict[str, Any]]:
    """Hold every file to its recorded digests before anything is extracted.

    A mismatching file is kept where it is, for inspection. A file with no digest on record
    and a name that is not a published one cannot be verified: refused unless ``verify`` is off.
    """
    trusted = _trusted(target)
    records = []
    for f in files:
        got = file_digests(f.path)
        want, where = _expected(f, trusted, target)
        if not verify:
            _say(f"--no-verify: {f.path} is NOT checked (SHA-256 {got['sha256']}, "
                 f"{got['size']} bytes)")
            where = "not verified (--no-verify)"
        elif want:
            for kind, label in (("size", "size"), ("sha256", "SHA-256"), ("md5", "MD5")):
                if want.get(kind) is not None and str(got[kind]) != str(want[kind]).lower():
                    raise DataError(
                        f"{label} mismatch for {f.path}: expected {want[kind]}, got {got[kind]} "
                        f"(expected digests from {where}). Nothing was extracted and the file is "
                        f"kept for inspection; delete it and run again, pass another --source, or "
                        "--no-verify to install it anyway.")
        elif f.part is None:
            raise DataError(
                f"{f.path}: no digest is on record for a file of that name (the published "
                f"{name} files are "
                f"{', '.join(sorted({p.filename for p in sources.get(name).parts}))})"
                "; it cannot be verified. Rename it if it is one of them, or pass --no-verify.")
        else:
            where = "first use"
        records.append({"filename": f.path.name, "origin": f.origin, **got,
                        "verified_against": where, "sha256_known": bool(want.get("sha256")),
                        "md5_known": bool(want.get("md5"))})
    return records


def _install(name: str, files: list[_File] | Path, target: Path, progress: bool,
             verify: bool) -> dict[str, Any]:
    """Verify, unpack into a staging folder next to ``target``, finish, validate, rename."""
    src = sources.get(name)
    records = _check_digests(name, files, target, verify) if isinstance(files, list) else []
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.cpt-staging-", dir=target.parent))
    try:
        if isinstance(files, Path):
            shutil.copytree(_find_dataset(files, src.anchors), staging / "copy", symlinks=False)
        else:
            for f in files:
                _unpack(f, staging, progress)
        data_dir = _find_dataset(staging, src.anchors)
        what = str(files) if isinstance(files, Path) else ", ".join(str(f.path) for f in files)
        if data_dir is None:
            raise DataError(f"{what}: none of {', '.join(src.anchors)} in the unpacked files: "
                            f"are they the {name} release?")
        try:
            splits = _finish_and_validate(name, data_dir)
        except DataError as exc:  # name the user's input, not the staging folder (deleted)
            raise DataError(f"{what}: {str(exc).replace(str(data_dir) + os.sep, '')}") from None
        _remove_if_empty(target)
        os.replace(data_dir, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    origin = str(files) if isinstance(files, Path) else ", ".join(f.origin for f in files)
    return {"source": origin, "files": records, "splits": splits, "verified": verify,
            "no_verify": not verify}


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _unpack(f: _File, staging: Path, progress: bool) -> None:
    """Extract an archive (or copy a plain published file) into ``staging``.

    A broken or refused download is deleted so that a rerun fetches it afresh; the user's own
    file is never touched.
    """
    try:
        if archive_kind(f.path) is not None:
            safe_extract(f.path, staging, progress=progress)
        elif f.path.name.lower().endswith(_ARCHIVE_SUFFIXES):
            raise DataError(f"{f.path} is not a zip or tar archive, or is truncated (its bytes "
                            "are neither format); download it again or pass another --source")
        else:
            shutil.copyfile(f.path, staging / f.path.name)
    except DataError:
        if f.downloaded:
            f.path.unlink(missing_ok=True)
        raise


def _find_dataset(top: Path, anchors: tuple[str, ...]) -> Path | None:
    """The shallowest folder under ``top`` holding one of ``anchors`` (breadth first)."""
    level = [top]
    for _ in range(_MAX_DEPTH + 1):
        for folder in level:
            if any((folder / a).exists() for a in anchors):
                return folder
        level = sorted(d for f in level for d in f.iterdir()
                       if d.is_dir() and not d.is_symlink() and d.name != "__MACOSX")
    return None


def _finish_and_validate(name: str, data_dir: Path) -> dict[str, Any]:
    """Run the dataset's post-extraction step, then read every split and check its files."""
    src = sources.get(name)
    if src.finish:
        module, func = src.finish.split(":")
        getattr(importlib.import_module(module), func)(data_dir)
    reader = importlib.import_module(f"cptlib.data.{name}").read
    summary = {}
    for split in ("train", "val", "test"):
        ds = reader(data_dir, split, _as_is)  # files and metadata only: no image transforms
        if ds.loader is not None:
            missing = [p for p in ds.items if not os.path.isfile(p)]
            if missing:
                raise DataError(f"{name}/{split}: {len(missing)} image file(s) missing, e.g. "
                                f"{missing[0]}; the archive is incomplete")
        summary[split] = {"n": len(ds), "group_counts": ds.group_counts.tolist()}
    if summary["train"]["n"] == 0:
        raise DataError(f"{name}: the training split is empty")
    return summary


def _as_is(x: Any) -> Any:
    return x


def _adopt_in_place(name: str, target: Path) -> Path:
    """``--source`` equal to ``--root``: check an existing copy where it is and mark it."""
    if _find_dataset(target, sources.get(name).anchors) != target:
        raise DataError(f"{target} does not hold the {name} layout at its top "
                        f"(expected one of {', '.join(sources.get(name).anchors)})")
    splits = _finish_and_validate(name, target)
    write_marker(target, name, source=f"adopted in place: {target}", files=[], splits=splits)
    _say(f"{name} checked and marked in {target}")
    return target


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None, name: str | None = None) -> int:
    """``cpt data``-style command line (the data scripts use it with ``name`` fixed)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"{name}.py" if name else "cpt data",
        description=f"Download, verify and prepare {name or 'a dataset'} for cptlib.data.load.")
    if name is None:
        parser.add_argument("name", choices=REAL + EMBEDDED, help="dataset to prepare")
    parser.add_argument("--root", help="dataset folder (default: $CPT_DATA/NAME)")
    parser.add_argument("--source", help="mirror URL, local archive or folder of files")
    parser.add_argument("--seed", type=int, default=0, help="seed of the embedded datasets")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-verify", action="store_true",
                        help="install files whose digests are not the recorded ones")
    args = parser.parse_args(argv)
    try:
        path = prepare(name or args.name, args.root, args.source, args.seed,
                       progress=not args.no_progress, verify=not args.no_verify)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
