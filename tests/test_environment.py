"""The conda environment (GPU users) and the pip requirements (everyone else) pin the same
versions, so a result does not depend on which of the two a user installed."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def pip_pins() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return _pins(pip_section)


def test_conda_and_pip_pin_the_same_versions():
    assert conda_pins() == pip_pins()


def test_torch_and_torchvision_are_pinned_as_the_pair_that_works_here():
    pins = pip_pins()
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    for name in ("torch", "timm", "open-clip-torch", "peft", "scipy", "jupyter-book"):
        assert version(name).split("+")[0] == pip_pins()[name], name
