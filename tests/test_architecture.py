"""The layout rule: stages sit on a library and never import one another."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "voxadapt"
STAGES = {"prepare", "cache", "train", "transcribe", "evaluate", "score", "export", "demo"}
COMPOSERS = {"demo", "cli"}  # compose stages by design
LIBRARY = {
    "audio",
    "text",
    "sources",
    "manifest",
    "features",
    "data",
    "model",
    "decoding",
    "metrics",
    "references",
    "scoring",
    "report",
    "config",
    "errors",
    "tiny",
    "augment",
    "trackers",
    "vad",
}


def voxadapt_imports(path: Path) -> set[str]:
    """Top-level voxadapt modules that `path` imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("voxadapt"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from voxadapt import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("voxadapt."):
                    found.add(alias.name.split(".")[1])
    return found


def modules() -> dict[str, Path]:
    result = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    result.update({f"sources/{p.stem}": p for p in (PACKAGE / "sources").glob("*.py")})
    return result


def test_every_module_is_a_stage_or_library():
    top = {name for name in modules() if "/" not in name}
    assert top <= STAGES | LIBRARY | COMPOSERS, top - (STAGES | LIBRARY | COMPOSERS)


@pytest.mark.parametrize("name", sorted(STAGES - COMPOSERS))
def test_no_stage_imports_another_stage(name):
    imported = voxadapt_imports(modules()[name]) - {name}
    assert not imported & STAGES, f"stage {name} imports stage(s) {imported & STAGES}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if n.split("/")[0] in LIBRARY))
def test_library_never_imports_a_stage(name):
    imported = voxadapt_imports(modules()[name])
    assert not imported & STAGES, f"library module {name} imports stage(s) {imported & STAGES}"


def test_the_rule_is_checked_on_real_imports():
    # guards the test itself: known edges must be seen
    assert "decoding" in voxadapt_imports(modules()["train"])
    assert "prepare" in voxadapt_imports(modules()["demo"])
