"""The layout rule: stages sit in voxadapt/stages on a library and never import one another."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "voxadapt"
COMMANDS = {
    "prepare",
    "cache",
    "train",
    "transcribe",
    "evaluate",
    "score",
    "compare",
    "export",
    "serve",
    "demo",
    "doctor",
    "redact",
}
COMPOSERS = {"stages.demo", "cli"}  # compose stages by design


def voxadapt_imports(path: Path) -> set[str]:
    """The voxadapt modules that `path` imports (anywhere in the file), as dotted names below
    the package: 'stages.train', 'scoring.rates', 'model'."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("voxadapt"):
            below = node.module.split(".")[1:]
            if below:
                found.add(".".join(below))
            for alias in node.names:  # from voxadapt.stages import train
                found.add(".".join([*below, alias.name]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("voxadapt."):
                    found.add(alias.name.split(".", 1)[1])
    return found


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name below it ('stages.train', 'model')."""
    result = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            result[".".join(parts)] = path
    return result


def stages() -> set[str]:
    return {name for name in modules() if name.startswith("stages.")}


def imported_stages(name: str) -> set[str]:
    return {m for m in voxadapt_imports(modules()[name]) if m.startswith("stages.")} & stages()


def test_every_command_is_a_stage_module():
    assert {name.removeprefix("stages.") for name in stages()} == COMMANDS


def test_cli_dispatches_to_every_stage():
    from voxadapt.cli import COMMANDS as cli_commands

    assert {command.module for command in cli_commands} == COMMANDS


@pytest.mark.parametrize("name", sorted(stages() - COMPOSERS))
def test_no_stage_imports_another_stage(name):
    imported = imported_stages(name) - {name}
    assert not imported, f"stage {name} imports stage(s) {imported}"


@pytest.mark.parametrize(
    "name", sorted(n for n in modules() if n != "stages" and n not in stages() | COMPOSERS)
)
def test_library_never_imports_a_stage(name):
    imported = imported_stages(name)
    assert not imported, f"library module {name} imports stage(s) {imported}"


def test_the_rule_is_checked_on_real_imports():
    # guards the test itself: known edges must be seen
    assert "decoding" in voxadapt_imports(modules()["stages.train"])
    assert "stages.prepare" in imported_stages("stages.demo")
    assert "scoring.rates" in voxadapt_imports(modules()["scoring.rows"])


CLAIMS = {"claim_outputs", "claim_output_file", "claim_output_entry"}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_stage_claims_its_outputs_through_the_guard(name):
    """A stage's outputs go through voxadapt.outputs (inputs never overwritten, foreign files
    never replaced, one writer per folder): every stage module calls a claim function."""
    path = modules()[name]
    if "WRITES_NO_FILES = True" in path.read_text(encoding="utf-8"):  # serve: declared
        assert not _calls(path) & {"atomic_write", "write_jsonl", "write_text", "open"}
        return
    assert _calls(path) & CLAIMS, f"{name} writes outputs without claiming them"


@pytest.mark.parametrize("name", sorted(stages()))
def test_no_stage_checks_output_folders_by_hand(name):
    """check_output_dir is one step of the guard; a stage calling it directly would skip the
    input/ownership checks and the lock."""
    assert not _calls(modules()[name]) & {"check_output_dir", "check_output_file"}
