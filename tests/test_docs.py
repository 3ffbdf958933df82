"""The documentation stays honest: a short README that links every docs page, relative links and
#anchors that resolve, and code that cites docs pages by named anchor, never "section N".
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
#: Markdown files whose links are checked.
PAGES = [README, REPO / "CHANGELOG.md", *DOCS]
#: Where code, configs and tests live: none of them may cite the old BENCHMARKS.md or a
#: numbered section.
CODE_DIRS = ("ovdet", "benchmarks", "tools", "configs", "tests")
CODE_FILES = ("setup.py", "pyproject.toml", "Makefile", "constraints.txt")
CODE_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".md", ".json", ""}
MAX_README_LINES = 160

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (neither holds links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed,
    spaces as hyphens (duplicates get -1, -2, ... in :func:`anchors`)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(
        c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN"
    )  # letters and digits of any script, spaces, hyphens, underscores
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of the Markdown file ``path``."""
    seen: dict[str, int] = {}
    result = set()
    for match in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    """The link targets of ``path`` that point inside the repository (no scheme, no mailto)."""
    prose = _prose(path.read_text(encoding="utf-8"))
    targets = _MD_LINK.findall(prose) + _HTML_LINK.findall(prose)
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def test_github_slug_matches_githubs_rule():
    assert github_slug("Freed memory kept for reuse") == "freed-memory-kept-for-reuse"
    assert github_slug("Why 20,000 classes cost more") == "why-20000-classes-cost-more"
    assert github_slug("MODEL.OVDET.DISTILL: ViLD-image") == "modelovdetdistill-vild-image"
    assert github_slug("The `--small` size") == "the---small-size"
    assert github_slug("Without novel names in CLIP's captions") == (
        "without-novel-names-in-clips-captions"
    )


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_every_docs_page():
    linked = {
        (README.parent / t.split("#")[0]).resolve() for t in relative_links(README) if t[0] != "#"
    }
    missing = [p.relative_to(REPO).as_posix() for p in DOCS if p.resolve() not in linked]
    assert DOCS, "no docs/*.md pages"
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def _code_files():
    for name in CODE_DIRS:
        for path in sorted((REPO / name).rglob("*")):
            if path.is_file() and path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts:
                yield path
    for name in CODE_FILES:
        if (REPO / name).is_file():
            yield REPO / name


def test_code_cites_docs_pages_by_name_not_section_number():
    this = Path(__file__).resolve()
    pattern = re.compile(r"section [0-9]|BENCHMARKS\.md", re.IGNORECASE)
    hits = []
    for path in _code_files():
        if path.resolve() == this:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "cite docs/<page>.md#<anchor> instead:\n" + "\n".join(hits)


def test_code_citations_of_docs_pages_resolve():
    """Every ``docs/PAGE.md#anchor`` cited in code, configs or tests names an existing page and
    heading."""
    this = Path(__file__).resolve()
    citation = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")
    broken = []
    for path in _code_files():
        if path.resolve() == this:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for page, anchor in citation.findall(text):
            dest = REPO / "docs" / page
            if not dest.is_file():
                broken.append(f"{path.relative_to(REPO)}: docs/{page} does not exist")
            elif anchor and anchor not in anchors(dest):
                broken.append(f"{path.relative_to(REPO)}: no heading #{anchor} in docs/{page}")
    assert not broken, "\n".join(broken)
