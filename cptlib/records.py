"""Run records: one JSON file per run, written atomically, and their reading back into pandas.

A record lives at ``results/<profile>/<experiment>/<run_id>.json`` where the run id hashes the
run's parameters, so a sweep can tell whether a run was already done (and with which code, via
``code_version``). ``load_records`` turns a folder of records into one DataFrame row per run,
``aggregate`` gives mean ± standard error over seeds, ``format_mean_se`` prints it for tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cptlib import _io
from cptlib._env import git_state, hardware, provenance  # noqa: F401 — re-exported

#: Record fields copied as they are into a ``load_records`` row.
_TOP_LEVEL_COLUMNS = ("trainable_params", "wall_time_s", "code_version", "notebook")

_ID_LENGTH = 12


# ----------------------------------------------------------------------------- run ids


def _canonical(value: Any, where: str = "params") -> Any:
    """A JSON value that hashes the same for equal parameters written differently.

    Integral floats become ints (c=[1, 1] == c=[1.0, 1.0]), tuples become lists, NumPy / torch
    scalars and arrays become Python values; bools stay bools (True is not the parameter 1).
    """
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy / torch scalars and arrays
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}: parameters must be finite numbers")
        return int(value) if value.is_integer() else value
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
        return {k: _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where} has type {type(value).__name__}, which a run id cannot hash")


def canonical_json(params: dict[str, Any]) -> str:
    """The compact, key-sorted JSON text that ``run_id`` hashes (exposed for debugging ids)."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    return json.dumps(_canonical(params), sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(params: dict[str, Any]) -> str:
    """Short stable id of a run: the first 12 hex digits of sha256 of ``canonical_json``."""
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()[:_ID_LENGTH]


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def _hashed_files(entry: Path) -> list[tuple[str, Path]]:
    """(label, file) pairs of one ``code_version`` entry: a file, or a folder's ``*.py`` files.

    Labels are relative (a file's name, or its path inside the folder) so the version does not
    depend on where the checkout lives.
    """
    if entry.is_file():
        return [(entry.name, entry)]
    if entry.is_dir():
        return [
            (f.relative_to(entry).as_posix(), f)
            for f in entry.rglob("*.py")
            if "__pycache__" not in f.parts
        ]
    raise ValueError(f"code_version: {entry} is neither a file nor a folder")


def code_version(paths: Iterable[Path | str] | None = None) -> str:
    """Hash of the source that determines a run's result (12 hex digits).

    Default: every ``.py`` file of the installed ``cptlib`` package. Pass files and folders
    (e.g. the package and the experiment's notebook) to cover more. File names and contents
    are hashed in sorted order, with line endings normalised, so a checkout on another OS or
    in another folder gets the same version.
    """
    entries = [_package_dir()] if paths is None else [Path(p) for p in paths]
    files = sorted(pair for entry in entries for pair in _hashed_files(entry))
    digest = hashlib.sha256()
    for label, path in files:
        content = path.read_bytes().replace(b"\r\n", b"\n")
        for part in (label.encode(), hashlib.sha256(content).digest()):
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:_ID_LENGTH]


# ----------------------------------------------------------------------------- files


def _check_name(kind: str, name: str) -> None:
    if not name or not isinstance(name, str) or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"{kind} must be a plain folder name, got {name!r}")


def record_path(results_dir: Path | str, profile: str, experiment: str, params: dict) -> Path:
    """Where a run's record lives: ``results_dir/profile/experiment/<run_id(params)>.json``."""
    _check_name("profile", profile)
    _check_name("experiment", experiment)
    return Path(results_dir) / profile / experiment / f"{run_id(params)}.json"


SCHEMA = "cptlib-run/1"
#: Fields that differ between two executions of the same run (timing, machine, date); every
#: other field of a record is a function of the run's parameters and code.
VOLATILE = ("wall_time_s", "train_time_s", "provenance")


@dataclass
class RunRecord:
    """The one shape of a run record, for every experiment (the toy included).

    ``write_record`` and ``read_record`` are its only writer and reader. Records written before
    the schema had a name (``cptlib-run/0``: no ``schema`` field, no ``split_group_counts``) are
    read and upgraded; a record of a newer schema is refused with a message.
    """

    experiment: str
    profile: str
    run_id: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    code_version: str | None = None
    provenance: dict[str, Any] | None = None
    notebook: str | None = None
    history: list[dict[str, Any]] | None = None
    group_names: list[str] | None = None
    train_group_counts: list[int] | None = None
    split_group_counts: dict[str, list[int]] | None = None
    trainable_params: int | None = None
    adapter: str | None = None
    adapter_bytes: int | None = None
    wall_time_s: float | None = None
    train_time_s: float | None = None
    resolved: dict[str, Any] | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, schema first; fields a kind of run does not have are left out."""
        out = {"schema": self.schema}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "schema" and (value is not None or f.name == "notebook"):
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "record") -> RunRecord:
        """Validate and upgrade a record's JSON object; ValueError names what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            raise ValueError(f"{where} is not a run record (no 'params' object)")
        data = dict(data)
        schema = data.setdefault("schema", "cptlib-run/0")
        if schema == "cptlib-run/0":
            data["schema"] = SCHEMA  # v0 lacks only optional fields
        elif schema != SCHEMA:
            raise ValueError(f"{where} has schema {schema!r}, which this cptlib ({SCHEMA}) does "
                             "not read; update cptlib or rerun the run")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown}")
        missing = [k for k in ("experiment", "profile", "run_id", "metrics") if k not in data]
        if missing:
            raise ValueError(f"{where} lacks field(s) {missing}")
        return cls(**data)


def write_record(record: RunRecord | dict[str, Any], path: Path | str) -> Path:
    """Write ``record`` as strict JSON at ``path`` atomically: readers see the old file or the
    new one (NaN and ±inf become null)."""
    if isinstance(record, dict):
        record = RunRecord.from_dict(record, str(path))
    return _io.write_json(path, record.to_dict())


def load_record(path: Path | str) -> RunRecord:
    """The record stored at ``path``, validated (ValueError if it is not a record)."""
    return RunRecord.from_dict(_io.read_json(path), str(path))


def read_record(path: Path | str) -> dict[str, Any]:
    """The record at ``path`` as a plain dict of the current schema (older records upgraded)."""
    return load_record(path).to_dict()

# ----------------------------------------------------------------------------- tables


def _number_text(v: Any) -> str:
    """``1.0`` -> ``"1"``, ``0.5`` -> ``"0.5"``: control vectors read as they were typed."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return format(v, "g") if isinstance(v, float) else str(v)


def vector_str(values: Sequence[Any] | None) -> str:
    """A list parameter as a groupable string: ``[1, 1, 4, 1]`` -> ``"1,1,4,1"``, None -> "none"."""
    if values is None:
        return "none"
    return ",".join(_number_text(v) for v in values)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Metrics as columns: nested dicts join keys with '.', lists get one column per index."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = math.nan if value is None else value


def _param_columns(params: dict[str, Any], taken: set[str]) -> dict[str, Any]:
    """Parameters as columns; a list also gets ``<name>_str`` so it can be grouped on."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        column = f"params.{key}" if key in taken else key
        if isinstance(value, dict):
            _flatten(value, column, out)
            continue
        out[column] = value
        if isinstance(value, (list, tuple)) or (key == "c" and value is None):
            out[f"{column}_str"] = vector_str(value)
    return out


def _git_commit(record: dict[str, Any]) -> str | None:
    """The commit in a record's provenance, tolerating records written without one."""
    prov = record.get("provenance")
    git = prov.get("git") if isinstance(prov, dict) else None
    return git.get("commit") if isinstance(git, dict) else None


def _row(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """One DataFrame row; the folder names stand in for a missing ``profile`` / ``experiment``."""
    row: dict[str, Any] = {
        "experiment": record.get("experiment", path.parent.name),
        "profile": record.get("profile", path.parent.parent.name),
        "run_id": record.get("run_id", path.stem),
    }
    row.update({key: record.get(key) for key in _TOP_LEVEL_COLUMNS})
    row["git_commit"] = _git_commit(record)
    row["path"] = str(path)
    taken = set(row)
    metrics: dict[str, Any] = {}
    _flatten(record.get("metrics") or {}, "", metrics)
    taken |= set(metrics)
    row.update(_param_columns(record["params"], taken))
    row.update(metrics)
    return row


def load_records(
    results_dir: Path | str, profile: str | None = None, experiment: str | None = None
) -> pd.DataFrame:
    """Every record under ``results_dir/<profile>/<experiment>/*.json`` as one row per run.

    Columns: experiment, profile, run_id, the parameters (``c`` as a list plus ``c_str``),
    the metrics flattened (``test.worst_group_acc``, ``test.per_group_acc.0``, ``last_test.*``,
    ``selected_step``, …), trainable_params, wall_time_s, code_version, notebook, git_commit,
    path. An unreadable file (corrupt, or mid-write by another process) is skipped with a
    warning, so a live sweep never breaks a summary notebook.
    """
    for kind, name in (("profile", profile), ("experiment", experiment)):
        if name is not None:
            _check_name(kind, name)
    pattern = f"{profile or '*'}/{experiment or '*'}/*.json"
    rows = []
    for path in sorted(Path(results_dir).glob(pattern)):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            rows.append(_row(read_record(path), path))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            warnings.warn(f"skipping unreadable run record {path}: {err}", stacklevel=2)
    if not rows:  # keep the key columns so callers can filter an empty table
        return pd.DataFrame(columns=["experiment", "profile", "run_id", *_TOP_LEVEL_COLUMNS,
                                     "git_commit", "path"])
    return pd.DataFrame(rows)


def aggregate(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, standard error (std ddof=1 / sqrt(n); NaN when n = 1) and n of each metric per group.

    Columns: the ``by`` keys, ``n`` (runs in the group), then ``<metric>`` and ``<metric>_se``.
    The SE of a metric counts only the runs where it is not NaN. Missing keys (e.g. ``c`` of an
    ERM run) form their own group instead of being dropped.
    """
    if not by or not metrics:
        raise ValueError("aggregate needs at least one 'by' column and one metric")
    missing = [col for col in [*by, *metrics] if col not in df.columns]
    if missing:
        raise ValueError(f"aggregate: no column(s) {missing}; available: {sorted(df.columns)}")
    for col in by:
        if df[col].map(lambda v: isinstance(v, (list, dict))).any():
            raise ValueError(f"aggregate: column {col!r} holds lists; group by {col + '_str'!r}")
    values = df[metrics].apply(pd.to_numeric, errors="coerce")
    grouped = values.groupby([df[col] for col in by], dropna=False, sort=True)
    mean, std, count = grouped.mean(), grouped.std(ddof=1), grouped.count()
    out = pd.DataFrame({"n": grouped.size()})
    for m in metrics:
        out[m] = mean[m]
        out[f"{m}_se"] = std[m] / np.sqrt(count[m])
    return out.reset_index()


def format_mean_se(
    mean: float | None, se: float | None, scale: float = 100, digits: int = 1
) -> str:
    """``"81.3 ± 1.2"`` for tables; just the mean when the SE is undefined (one seed)."""
    if mean is None or not math.isfinite(mean):
        return "—"
    text = f"{mean * scale:.{digits}f}"
    if se is None or not math.isfinite(se):
        return text
    return f"{text} ± {se * scale:.{digits}f}"
