"""The README cannot drift from the code: its tour runs as written, and every other
`voxadapt` command in it parses; with the documentation site's commands (tests/test_docs.py
parses those), every command reads only what a documented command writes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxadapt.cli import _parse, build_parser

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def tour_block() -> str:
    return re.search(r"<!-- tour -->\n```bash\n(.*?)```", README, flags=re.S).group(1)


def commands(block: str) -> list[list[str]]:
    """The `voxadapt` command lines of a bash block, continuations joined, comments removed."""
    joined = block.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "voxadapt":
            found.append(words[1:])
        elif words[:3] == ["torchrun", "--nproc_per_node=4", "-m"]:
            found.append(words[4:])  # torchrun ... -m voxadapt.cli ARGS
    return found


ALL = [command for block in bash_blocks(README) for command in commands(block)]


def docs_commands() -> list[tuple[str, list[str]]]:
    """(page, command) for every `voxadapt` command in a bash block of docs/, page by page."""
    return [
        (page.relative_to(DOCS).as_posix(), command)
        for page in sorted(DOCS.rglob("*.md"))
        for block in bash_blocks(page.read_text(encoding="utf-8"))
        for command in commands(block)
    ]


def option(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def options(command: list[str], flag: str) -> list[str]:
    """Every value of a repeatable option (`compare --system A --system B`)."""
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == flag]


def unwritten_inputs(documented: list[list[str]]) -> list[str]:
    """What a documented command reads that no documented command writes: adapters (train's
    output), feature caches (cache's), compared predictions (evaluate's or score's) and
    prepared manifests (prepare's), each named with the command that reads it."""
    trained = {"runs/demo/run"}  # the set-up line's demo trains there
    cached, evaluated, prepared = set(), set(), set()
    for command in documented:
        if command[0] == "train":
            out = option(command, "--output-dir")
            if out is None and option(command, "--config"):
                config = yaml.safe_load((ROOT / option(command, "--config")).read_text())
                out = config.get("output_dir")
            if out:
                trained.add(out)
        if command[0] == "cache":
            cached.add(option(command, "--out"))
        if command[0] in ("evaluate", "score"):
            evaluated.add(option(command, "--out"))
        if command[0] == "prepare":
            prepared.add(option(command, "--out"))
    problems = []
    for command in documented:
        line = "voxadapt " + " ".join(command)
        # --adapter DIR, or serve's repeatable [NAME=]DIR; compare's --system [NAME=]DIR
        adapters = [value.split("=", 1)[-1] for value in options(command, "--adapter")]
        systems = [value.split("=", 1)[-1] for value in options(command, "--system")]
        adapters += [system for system in systems if system.endswith("/adapter")]
        for adapter in adapters:
            if str(Path(adapter).parent) not in trained:
                problems.append(f"{adapter}: no train writes it ({line})")
        cache = option(command, "--cache")
        if cache and cache not in cached:
            problems.append(f"{cache}: no cache writes it ({line})")
        compare = option(command, "--compare")
        if compare and str(Path(compare).parent) not in evaluated:
            problems.append(f"{compare}: no evaluate or score writes it ({line})")
        for word in command:
            manifest = re.fullmatch(r"data/[\w-]+/(train|valid|test)\.jsonl", word)
            if manifest and str(Path(word).parent) not in prepared:
                problems.append(f"{word}: no prepare writes it ({line})")
    return problems


def test_the_tour_is_found_and_covers_every_stage():
    stages = [command[0] for command in commands(tour_block())]
    assert stages[:3] == ["prepare", "cache", "train"]
    assert {"transcribe", "evaluate", "score", "export"} <= set(stages)


@pytest.mark.parametrize("command", ALL, ids=[" ".join(c)[:60] for c in ALL])
def test_every_readme_command_parses(command):
    """A renamed or removed flag in the code fails here, naming the README line."""
    words = [word.replace("${MODEL}", "m").replace("$MODEL", "m") for word in command]
    args = _parse(build_parser(), words)
    assert args.command.name == words[0]


def test_readme_commands_read_what_earlier_commands_write():
    """Adapters, feature caches, compared predictions and prepared manifests named in the
    README or the docs are the outputs of a train, cache, evaluate/score or prepare command
    the README or the docs show."""
    documented = ALL + [command for _, command in docs_commands()]
    assert unwritten_inputs(documented) == []


@pytest.mark.slow
def test_the_tour_runs_as_written(tiny_model, tmp_path):
    """The tour block through bash, in a copy of the repository's layout, with the tiny
    model as MODEL (as the README tells laptop users to do)."""
    # the console script pip installed beside this interpreter comes first on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    assert shutil.which("voxadapt", path=path), "the voxadapt console script is not installed"
    for name in ("src", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": path, "MODEL": str(tiny_model), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # the first transcribe prints path<TAB>text on stdout, as its README comment says
    printed = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert [cells[0].endswith("ko_001.wav") for cells in printed] == [True]
    assert (tmp_path / "runs/tour/adapter/adapter_config.json").is_file()
    assert len((tmp_path / "data/tour/test.jsonl").read_text().splitlines()) == 2
    assert len(list((tmp_path / "subs").glob("*.srt"))) == 2
    assert len(list((tmp_path / "subs").glob("*.vtt"))) == 2
    for run in ("runs/tour-base", "runs/tour-eval", "runs/tour-score"):
        assert (tmp_path / run / "metrics.json").is_file() and (tmp_path / run / "report.html")
    assert "compare" in (tmp_path / "runs/tour-eval/metrics.json").read_text()
    assert (tmp_path / "models/tour/model.safetensors").is_file()
