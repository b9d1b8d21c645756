"""Citations in the code point into this repository, at pages and sections of docs/ that exist.

What the code relies on from outside (the original Flash-VStream code, transformers and bitsandbytes behaviour)
is written down in docs/. Comments cite it as `docs/<page>.md, "<section>"` (the section is a heading of that
page) and the original's bugs as `bug B<n>` (a heading of docs/original_model.md). A citation of a document that
is not in the repository cannot be looked up by anyone who clones it, so it must not come back.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("src", "tests", "examples", "README.md", "MODEL_CARD.md")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".json", ".jinja", ".cfg", ".yaml", ".yml", ".sh", ".ini"}

# Documents outside the repository (their content relevant here is in docs/), and ways of citing them.
OUTSIDE_CITATIONS = {
    r"spec §": "the original-model spec (now docs/original_model.md)",
    r"\bspec bugs?\b": "a bug of the original-model spec (now `bug B<n>` in docs/original_model.md)",
    r"\bspec B\d": "a bug of the original-model spec (now `bug B<n>` in docs/original_model.md)",
    r"\bthe spec\b": "the original-model spec (now docs/original_model.md)",
    r"flash_vstream_v1\.md": "the original-model spec (now docs/original_model.md)",
    r"hf_conventions": "the transformers 5.23 notes (now docs/transformers_notes.md)",
    r"transformers_5_24\.md": "the transformers 5.24 notes (now docs/transformers_notes.md)",
    r"shared/reference": "a folder outside the repository",
}

# `docs/page.md` optionally followed by quoted section names: `docs/page.md, "A", "B" and "C"` (a `#` comment or
# a docstring may wrap between names, never inside one).
DOCS_CITATION = re.compile(r'docs/([\w./-]+?\.md)((?:\s*(?:,\s*)?(?:and\s+)?(?:#\s*)?\\?"[^"\\\n]+\\?")*)')
SECTION_NAME = re.compile(r'\\?"([^"\\\n]+)\\?"')
BUG_CITATION = re.compile(r"\bbugs?\s+(B\d+(?:\s*(?:,|and|to|-)\s*B\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def scanned_files() -> list[Path]:
    """Text files of the scanned paths; symlinks (their target is scanned), generated and cache folders skipped."""
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in candidates:
            parts = file.relative_to(ROOT).parts
            if any(part == "__pycache__" or part.endswith(".egg-info") or part.startswith(".") for part in parts):
                continue
            if file.is_symlink() or not file.is_file() or file.resolve() == Path(__file__).resolve():
                continue
            if file.suffix in TEXT_SUFFIXES:
                files.append(file)
    return files


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def headings(page: Path) -> list[str]:
    """The headings of a markdown page, outside fenced code blocks."""
    found, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.append(match.group(1))
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation removed, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def bug_numbers() -> set[str]:
    """`B1`, `B2`, ...: the bugs named by headings of docs/original_model.md (`### B1 retrieval indexes ...`)."""
    return {m.group(1) for h in headings(DOCS / "original_model.md") if (m := re.match(r"(B\d+)\b", h))}


def test_scan_covers_the_repository():
    files = {f.relative_to(ROOT).as_posix() for f in scanned_files()}
    assert {"README.md", "MODEL_CARD.md", "src/flash_vstream_hf/modeling/star_memory.py"} <= files
    assert "tests/test_docs.py" not in files


def test_no_citation_points_outside_the_repository():
    problems = []
    for file in scanned_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        for pattern, what in OUTSIDE_CITATIONS.items():
            for match in re.finditer(pattern, text):
                line = line_of(text, match.start())
                problems.append(f"{file.relative_to(ROOT)}:{line}: {match.group(0)!r} cites {what}")
    assert not problems, "citations of documents outside the repository:\n" + "\n".join(sorted(problems))


def test_cited_docs_pages_and_sections_exist():
    problems, cited = [], 0
    for file in scanned_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        for match in DOCS_CITATION.finditer(text):
            cited += 1
            where = f"{file.relative_to(ROOT)}:{line_of(text, match.start())}"
            page = DOCS / match.group(1)
            if not page.is_file():
                problems.append(f"{where}: docs/{match.group(1)} does not exist")
                continue
            titles = headings(page)
            for section in SECTION_NAME.findall(match.group(2)):
                if section not in titles:
                    problems.append(f"{where}: docs/{match.group(1)} has no section {section!r}")
    assert not problems, "citations of missing docs pages or sections:\n" + "\n".join(problems)
    assert cited > 0, "no docs/ citation found: is the pattern still right?"


def test_cited_bugs_are_described():
    known, problems = bug_numbers(), []
    assert {f"B{n}" for n in range(1, 16)} <= known
    for file in scanned_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        for match in BUG_CITATION.finditer(text):
            for bug in re.findall(r"B\d+", match.group(1)):
                if bug not in known:
                    where = f"{file.relative_to(ROOT)}:{line_of(text, match.start())}"
                    problems.append(f"{where}: bug {bug} is not a heading of docs/original_model.md")
    assert not problems, "\n".join(problems)


def test_links_inside_docs_resolve():
    problems = []
    pages = sorted(DOCS.glob("*.md"))
    assert {"README.md", "original_model.md", "glossary.md", "transformers_notes.md"} <= {p.name for p in pages}
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            name, _, fragment = target.partition("#")
            linked = page if not name else (page.parent / name)
            if not linked.is_file():
                problems.append(f"docs/{page.name}: link to missing {target}")
            elif fragment and fragment not in {anchor(h) for h in headings(linked)}:
                problems.append(f"docs/{page.name}: link to missing section {target}")
    assert not problems, "\n".join(problems)
