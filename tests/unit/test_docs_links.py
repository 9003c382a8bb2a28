"""The docs point at things that exist: relative links and their anchors, the code paths they
name, and diagrams that at least declare a Mermaid diagram type.

README.md is checked too; its links resolve from the repository root.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
CODE_PATH = re.compile(
    r"`(?P<path>(?:src|tests|docs|crds|charts|scripts|bench|api|operator|exporter-image)"
    r"/[^`\s]*)`"
)
MERMAID_TYPES = ("flowchart", "graph", "sequenceDiagram", "stateDiagram", "classDiagram")


def _base_dir(doc: Path) -> Path:
    return doc.parent


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(doc: Path) -> set[str]:
    text = _without_code_blocks(doc.read_text(encoding="utf-8"))
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_anchor_rule_matches_github() -> None:
    assert github_anchor("Alternatives to the diagram's design") == (
        "alternatives-to-the-diagrams-design"
    )
    assert github_anchor("Q1 Credits") == "q1-credits"
    assert github_anchor("Adding a writer (file format)") == "adding-a-writer-file-format"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    broken: list[str] = []
    for match in LINK.finditer(_without_code_blocks(doc.read_text(encoding="utf-8"))):
        target = match.group("target")
        if re.match(r"^[a-z]+:", target):
            continue
        path_part, _, anchor = target.partition("#")
        target_file = (_base_dir(doc) / path_part).resolve() if path_part else doc
        if not target_file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and target_file.suffix == ".md" and anchor not in anchors_of(target_file):
            broken.append(f"{target}: no such heading")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(REPO).as_posix())
def test_code_paths_named_in_docs_exist(doc: Path) -> None:
    """Every repository path written in backticks exists (placeholders like <id> excepted)."""
    missing = [
        m.group("path")
        for m in CODE_PATH.finditer(doc.read_text(encoding="utf-8"))
        if "<" not in m.group("path") and not (REPO / m.group("path").rstrip("/")).exists()
    ]
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(REPO).as_posix())
def test_mermaid_blocks_declare_a_diagram_type(doc: Path) -> None:
    blocks = re.findall(r"^```mermaid\n(.*?)^```", doc.read_text(encoding="utf-8"), re.M | re.S)
    for block in blocks:
        assert block.lstrip().startswith(MERMAID_TYPES), block[:60]


def test_architecture_and_design_answers_carry_diagrams() -> None:
    for name, least in (("architecture.md", 3), ("design-answers.md", 1)):
        text = (REPO / "docs" / name).read_text(encoding="utf-8")
        assert text.count("```mermaid") >= least, name


def test_design_answers_cover_the_six_questions_and_the_alternatives() -> None:
    headings = anchors_of(REPO / "docs" / "design-answers.md")
    for prefix in ("q1-", "q2-", "q3-", "q4-", "q5-", "q6-", "alternatives-"):
        assert any(h.startswith(prefix) for h in headings), prefix
