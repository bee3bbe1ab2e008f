"""Documentation that points somewhere must point at something that exists.

* Every section citation (``docs/methods.md §6.5``, ``evaluation.md §3.5–3.6``, ...) in a
  tracked ``*.py``, ``*.yaml`` or ``*.md`` file names a file inside the repository with a
  heading that carries that section number.
* No citation names a document outside the repository (the project's reference pages live in
  ``docs/``).
* Relative links in README.md, experiments/README.md and docs/ resolve.
* README.md, experiments/README.md and ``conf/`` carry no dates (history lives in
  CHANGELOG.md and docs/notes/).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# "<path>.md §N" followed by more numbers joined by ",", "–", "-", "and" or "or"
# ("§3, §9", "§3.5–3.6", "§6-§7", "§4.1, §4.2, §6.1").
_NUM = r"\d+(?:\.\d+)*[a-z]?"
CITATION = re.compile(
    rf"(?P<path>[\w./-]*[\w-]\.md)\)?\s*§\s*(?P<first>{_NUM})"
    rf"(?P<rest>(?:\s*(?:,|–|-|and|or)\s*§?\s*{_NUM}(?![\w.]*\.md))*)"
)
MORE = re.compile(_NUM)
OUTSIDE = re.compile(r"(^|/)(spec|shared)/|^\.\./|^/")
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def citations(text: str) -> list[tuple[str, str]]:
    """Every ``(path, section)`` pair cited in ``text``, ranges and lists expanded to their ends."""
    found = []
    for m in CITATION.finditer(text):
        for sec in [m.group("first"), *MORE.findall(m.group("rest"))]:
            found.append((m.group("path"), sec))
    return found


def resolve(path: str, citing: Path) -> Path | None:
    """The repository file a cited path means: as written from the root or from the citing
    file's folder, or a bare name in docs/. None when none of those exists."""
    candidates = [ROOT / path, citing.parent / path]
    if "/" not in path:
        candidates.append(ROOT / "docs" / path)
    for c in candidates:
        c = c.resolve()
        if c.is_file() and ROOT in c.parents:
            return c
    return None


def has_section(doc: Path, section: str) -> bool:
    """Does ``doc`` have a heading that starts with ``section`` (a trailing letter, as in
    ``§9a``, names a paragraph of section 9)?"""
    number = section.rstrip("abcdefghijklmnopqrstuvwxyz")
    heading = re.compile(rf"^#+\s+§?{re.escape(number)}(?:\.(?!\d)|\s|:)", re.M)
    return bool(heading.search(doc.read_text(encoding="utf-8")))


def test_citation_pattern_reads_lists_and_ranges():
    text = (
        "see docs/methods.md §6.5, §9b and (evaluation.md §3.5–3.6); "
        "gate.py (docs/methods.md §6-§7, §10 rows 1 and 7); docs/medsynth.md §1, §4."
    )
    assert citations(text) == [
        ("docs/methods.md", "6.5"),
        ("docs/methods.md", "9b"),
        ("evaluation.md", "3.5"),
        ("evaluation.md", "3.6"),
        ("docs/methods.md", "6"),
        ("docs/methods.md", "7"),
        ("docs/methods.md", "10"),
        ("docs/medsynth.md", "1"),
        ("docs/medsynth.md", "4"),
    ]


def test_section_lookup_tells_sections_apart(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n## 1. One\n\n### 1.2 Sub\n\n## 8.1 Figure\n", encoding="utf-8")
    assert has_section(doc, "1") and has_section(doc, "1.2") and has_section(doc, "8.1")
    assert not has_section(doc, "8")  # "8.1" is not section 8
    assert not has_section(doc, "1.3") and not has_section(doc, "2")
    assert has_section(doc, "1a")  # a lettered paragraph of section 1


def test_every_section_citation_resolves_inside_the_repository():
    files = _tracked("*.py", "*.yaml", "*.md")
    assert len(files) > 50, "git ls-files found too few files: not run from a checkout?"
    problems, n = [], 0
    for f in files:
        rel = f.relative_to(ROOT)
        if f == Path(__file__).resolve():  # this file's examples are the pattern's own tests
            continue
        for path, section in citations(f.read_text(encoding="utf-8")):
            n += 1
            if OUTSIDE.search(path):
                problems.append(
                    f"{rel}: '{path} §{section}' names a document outside the repository; "
                    "cite the project's own page in docs/ instead"
                )
                continue
            doc = resolve(path, f)
            if doc is None:
                problems.append(f"{rel}: '{path} §{section}': no such file in the repository")
            elif not has_section(doc, section):
                problems.append(
                    f"{rel}: '{path} §{section}': {doc.relative_to(ROOT)} has no heading "
                    f"numbered {section}; add it or cite the section that exists"
                )
    assert n >= 100, f"only {n} citations found: the pattern no longer reads them"
    assert not problems, "\n".join(problems)


def test_no_document_outside_the_repository_is_named_as_a_reference():
    pattern = re.compile(r"spec/(methods|evaluation|medsynth)\.md")
    hits = [
        f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
        for f in _tracked("*.py", "*.yaml", "*.md")
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "cite docs/methods.md, docs/evaluation.md or docs/medsynth.md:\n" + "\n".join(
        hits
    )


def _link_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "experiments" / "README.md", *_tracked("docs/*.md")]


def test_relative_links_resolve():
    problems = []
    for f in _link_files():
        for target in LINK.findall(f.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            dest = (f.parent / target).resolve()
            if "results" in dest.relative_to(ROOT).parts[:2] and not dest.parent.exists():
                continue  # docs/results/ is written by `make report`
            if not dest.exists():
                problems.append(f"{f.relative_to(ROOT)}: link to '{target}' leads nowhere")
    assert not problems, "\n".join(problems)


def _without_demo_table(text: str) -> str:
    """README.md minus its generated demo table (filled from docs/results/demo.md)."""
    return re.sub(r"<!-- demo-table:begin -->.*?<!-- demo-table:end -->", "", text, flags=re.S)


@pytest.mark.parametrize("name", ["README.md", "experiments/README.md", "conf"])
def test_no_dated_narrative(name):
    files = _tracked(f"{name}/*.yaml") if name == "conf" else [ROOT / name]
    hits = [
        f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
        for f in files
        for i, line in enumerate(_without_demo_table(f.read_text(encoding="utf-8")).splitlines(), 1)
        if DATE.search(line)
    ]
    assert not hits, (
        "dates belong in CHANGELOG.md (a change of a default) or docs/notes/ (an "
        "investigation):\n" + "\n".join(hits)
    )


def test_readme_has_the_demo_table_markers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = text.find("<!-- demo-table:begin -->"), text.find("<!-- demo-table:end -->")
    assert 0 <= begin < end, "README.md needs the demo-table markers, begin before end"


def test_notes_are_dated_and_indexed():
    notes = ROOT / "docs" / "notes"
    index = (notes / "README.md").read_text(encoding="utf-8")
    for note in sorted(notes.glob("*.md")):
        if note.name == "README.md":
            continue
        assert re.match(r"20\d\d-[01]\d-[0-3]\d-[a-z0-9.-]+\.md$", note.name), (
            f"{note.name}: name a note YYYY-MM-DD-topic.md"
        )
        assert f"({note.name})" in index, f"docs/notes/README.md does not list {note.name}"
