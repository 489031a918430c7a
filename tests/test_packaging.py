"""The development lock matches pyproject.toml, leaves torch to the user, and is what both the
README's set-up line and CI install."""

import re
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "dev.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins() -> dict[str, list[Requirement]]:
    pins: dict[str, list[Requirement]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#", "-")):
            requirement = Requirement(line)
            pins.setdefault(canonical(requirement.name), []).append(requirement)
    return pins


def dev_requirements() -> list[Requirement]:
    """The core dependencies and the dev extra, with the extras it names expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    requirements, pending = [Requirement(r) for r in project["dependencies"]], ["dev"]
    while pending:
        for line in extras[pending.pop()]:
            requirement = Requirement(line)
            if canonical(requirement.name) == "voxadapt":
                pending.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def test_every_dependency_is_pinned_within_its_bounds_for_this_python():
    pins = locked_pins()
    for requirement in dev_requirements():
        name = canonical(requirement.name)
        if name == "torch":
            continue
        applicable = [p for p in pins.get(name, []) if p.marker is None or p.marker.evaluate()]
        assert len(applicable) == 1, f"{name}: not pinned once here; regenerate the lock"
        (pinned,) = applicable[0].specifier
        assert pinned.operator == "==", applicable[0]
        assert requirement.specifier.contains(pinned.version, prereleases=True), (
            f"{name}=={pinned.version} is outside {requirement.specifier}: regenerate the lock"
        )


def test_torch_and_its_cuda_libraries_are_left_to_the_user():
    pins = locked_pins()
    assert "torch" not in pins
    assert not [name for name in pins if name.startswith(("nvidia-", "triton"))]
    torch_bound = next(r for r in dev_requirements() if canonical(r.name) == "torch")
    assert all(spec.operator == ">=" for spec in torch_bound.specifier), "torch stays a lower bound"


def test_readme_set_up_line_and_ci_install_from_the_lock():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = 'pip install torch==2.13.0 && pip install -c requirements/dev.lock -e ".[dev]"'
    assert setup in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'python3 -m venv "$VENV"' in ci  # a new environment on every run
    assert 'pip install --quiet -c requirements/dev.lock -e ".[dev]"' in ci
    assert '"torch==2.13.0"' in ci
    header = LOCK.read_text(encoding="utf-8").splitlines()[1]
    command = (ROOT / "requirements" / "README.md").read_text(encoding="utf-8")
    regenerate = re.search(r"uv pip compile .*?dev\.lock", command, flags=re.S).group(0)
    assert " ".join(regenerate.replace("\\\n", " ").split()) in header  # the documented command
