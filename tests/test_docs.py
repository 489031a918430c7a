"""The documentation site cannot rot: it builds with `mkdocs build --strict` (a link to a
missing page or anchor, or a page outside the nav, fails the build), the README's links into
docs/ resolve to a file and a heading, every stage has a page, and every `voxadapt` command in
a docs bash block parses with the real parser (test_readme.py checks that what they read is
what a documented command writes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify
from test_readme import README, ROOT, docs_commands, unwritten_inputs

from voxadapt.cli import COMMANDS, _parse, build_parser

DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
DOCS_COMMANDS = docs_commands()


def build_site(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of `config` into `site` (offline: no plugin fetches anything)."""
    # Material prints an end-of-life banner on every build unless told not to
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    return subprocess.run(
        [*command, "--site-dir", str(site)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def markdown_headings(text: str) -> list[str]:
    """The ATX headings of a Markdown text, outside fenced code blocks, as plain text."""
    headings, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip()
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
            headings.append(title.replace("`", "").replace("*", ""))
    return headings


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    kept = "".join(
        char for char in title.lower() if char in " -_" or unicodedata.category(char)[0] in "LN"
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> tuple[set[str], set[str]]:
    """The anchors of a page's headings as GitHub renders the file and as the site does."""
    titles = markdown_headings(page.read_text(encoding="utf-8"))
    return {github_anchor(t) for t in titles}, {slugify(t, "-") for t in titles}


def readme_links() -> list[str]:
    """Every inline link target of the README (`[text](target)`)."""
    return re.findall(r"\]\(([^)\s]+)\)", README)


def copy_site(tmp_path: Path) -> Path:
    """A copy of mkdocs.yml and docs/ to break; returns the copied mkdocs.yml."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(MKDOCS_YML, tmp_path / "mkdocs.yml")
    return tmp_path / "mkdocs.yml"


def test_broken_links_and_anchors_are_warnings_that_strict_turns_into_errors():
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    links = config["validation"]["links"]
    assert links["not_found"] == links["anchors"] == links["unrecognized_links"] == "warn"
    assert config["validation"]["nav"]["omitted_files"] == "warn"
    assert not config.get("plugins"), "plugins may need the network; the default search is kept"


@pytest.mark.slow
def test_the_site_builds_strictly_with_a_page_per_stage(tmp_path):
    result = build_site(MKDOCS_YML, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr
    for command in COMMANDS:
        assert (tmp_path / "site" / "stages" / command.name / "index.html").is_file()
    assert (tmp_path / "site" / "exit-statuses" / "index.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "added", "named"),
    [
        ("units.md", "[gone](no-such-page.md)", "no-such-page.md"),
        ("index.md", "[gone](units.md#no-such-section)", "no-such-section"),
        ("stages/train.md", "[gone](#no-such-heading)", "no-such-heading"),
        ("orphan.md", "# An orphan\n", "orphan.md"),  # a page left out of the nav
    ],
)
def test_a_broken_link_fails_the_build(tmp_path, page, added, named):
    """The strict build is a check that can fail: each breakage is named in its output."""
    config = copy_site(tmp_path)
    target = tmp_path / "docs" / page
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(before + "\n" + added + "\n", encoding="utf-8")
    result = build_site(config, tmp_path / "site")
    assert result.returncode != 0
    assert named in result.stderr


def test_every_stage_has_a_page_in_the_nav():
    nav = MKDOCS_YML.read_text(encoding="utf-8")
    for command in COMMANDS:
        page = f"stages/{command.name}.md"
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
        assert f": {page}" in nav, f"{page} is not in mkdocs.yml's nav"


def test_readme_links_into_docs_resolve_to_a_file_and_a_heading():
    """Both as GitHub shows the README (its anchors) and as the site builds the page."""
    into_docs = [link for link in readme_links() if link.startswith("docs/")]
    assert len(into_docs) >= 20, into_docs  # the README points into the reference throughout
    for link in into_docs:
        path, _, anchor = link.partition("#")
        page = ROOT / path
        assert page.is_file(), f"README links to {path}, which does not exist"
        if anchor:
            on_github, on_site = anchors(page)
            assert anchor in on_github, f"README: {link}: GitHub has no such anchor"
            assert anchor in on_site, f"README: {link}: the site has no such anchor"


def test_readme_links_within_itself_and_to_repository_files_resolve():
    for link in readme_links():
        if link.startswith("#"):
            assert link[1:] in {github_anchor(t) for t in markdown_headings(README)}, link
        elif not re.match(r"https?://", link):
            assert (ROOT / link.partition("#")[0]).exists(), f"README links to {link}"


@pytest.mark.parametrize(
    ("title", "anchor"),
    [
        ("Which parts should learn?", "which-parts-should-learn"),
        ("3. `voxadapt train`: projector QLoRA", "3-voxadapt-train-projector-qlora"),
        ("Hosts and keys", "hosts-and-keys"),
        ("0: success", "0-success"),
    ],
)
def test_heading_anchors_match_githubs(title, anchor):
    assert github_anchor(markdown_headings(f"## {title}")[0]) == anchor


def test_readme_is_a_front_door():
    """Short, and prose lines within 100 characters (the set-up line is quoted verbatim)."""
    lines = README.splitlines()
    assert len(lines) <= 300
    setup = 'pip install torch==2.13.0 && pip install -c requirements/dev.lock -e ".[dev]"'
    long = [line for line in lines if len(line) > 100 and setup not in line]
    assert long == []


@pytest.mark.parametrize(
    ("page", "command"),
    DOCS_COMMANDS,
    ids=[f"{page}: {' '.join(command)[:50]}" for page, command in DOCS_COMMANDS],
)
def test_every_docs_command_parses(page, command):
    """A renamed or removed flag fails here, naming the page and the command."""
    args = _parse(build_parser(), command)
    assert args.command.name == command[0]


def test_docs_show_a_command_for_every_stage():
    shown = {command[0] for _, command in DOCS_COMMANDS}
    assert {command.name for command in COMMANDS} <= shown


def test_a_command_reading_what_no_command_writes_is_caught():
    """The cross-document check of test_readme.py can fail."""
    reading = [
        ["transcribe", "a.wav", "--adapter", "runs/nowhere/adapter"],
        ["evaluate", "data/unprepared/test.jsonl", "--out", "runs/e", "--cache", "cache/none"],
        ["serve", "--adapter", "a=runs/elsewhere/adapter"],
        ["compare", "data/unprepared/test.jsonl", "--system", "x=runs/gone/adapter"],
        [
            "score",
            "m.jsonl",
            "h.jsonl",
            "--out",
            "runs/s",
            "--compare",
            "runs/no/predictions.jsonl",
        ],
    ]
    found = unwritten_inputs(reading)
    for missing in (
        "runs/nowhere/adapter",
        "data/unprepared/test.jsonl",
        "cache/none",
        "runs/elsewhere/adapter",
        "runs/gone/adapter",
        "runs/no/predictions.jsonl",
    ):
        assert any(problem.startswith(missing + ":") for problem in found), missing


def test_exit_statuses_page_names_every_status():
    page = (DOCS / "exit-statuses.md").read_text(encoding="utf-8")
    for status in ("0", "1", "2", "3", "130"):
        assert f"## {status}: " in page
    assert "voxadapt: error: " in page and "--allow-failures" in page and "--help" in page
