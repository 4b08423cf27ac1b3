"""environment.yml (conda users) and pyproject.toml (pip) ask for the same packages at the same versions, and the
lock file pins every one of them."""

import re

import tomllib
import yaml
from packaging.requirements import Requirement

from tests.support import REPO

SELF = "kachin-ree-watch"


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if Requirement(r).name != SELF]
    return {_name(Requirement(r).name): str(Requirement(r).specifier) for r in reqs}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _environment() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    entries = []
    for d in env["dependencies"]:
        entries += d["pip"] if isinstance(d, dict) else [d]
    found = {}
    for e in entries:
        r = Requirement(e.split("#")[0].strip())
        if r.name not in ("python", "pip"):
            found[_name(r.name)] = str(r.specifier)
    return found


def test_environment_yml_agrees_with_pyproject():
    want, have = _pyproject(), _environment()
    assert have == want, (
        f"environment.yml differs from pyproject.toml: only in pyproject {sorted(set(want) - set(have))}, "
        f"only in environment.yml {sorted(set(have) - set(want))}, "
        f"other versions {sorted(k for k in set(want) & set(have) if want[k] != have[k])}"
    )


def test_the_lock_pins_every_requirement():
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    missing = sorted(set(_pyproject()) - set(pins))
    assert not missing, f"requirements.lock lacks {missing}: regenerate it with `make lock`"
    for name, spec in _pyproject().items():
        if name in pins:
            assert Requirement(f"{name}{spec}").specifier.contains(pins[name]), f"{name}=={pins[name]} is not {spec}"
