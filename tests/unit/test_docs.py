"""The README and docs/ pages: every relative link resolves, and the README stays a short start.

Pure file reading, no network: external links are left to the reader's browser.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250

# `[text](target)` and `![alt](target)`, with an optional "title" after the target.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
EXTERNAL = ("http://", "https://", "mailto:")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: a `# comment` in a shell block is no heading."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            lines.append("")  # keeps line numbers, for messages
            continue
        lines.append("" if fence else line)
    return lines


def _links(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for number, line in enumerate(_prose_lines(path.read_text(encoding="utf-8")), start=1):
        # Code spans are shown literally, so a `[x](y)` inside one is not a link.
        prose = INLINE_CODE.sub("", line)
        found.extend((number, m.group(1)) for m in LINK.finditer(prose))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lowercased, punctuation dropped.

    Hyphens, spaces and word characters (underscore included, as GitHub keeps it) survive;
    each space becomes a hyphen.
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = INLINE_CODE.sub(lambda m: m.group(2), text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_slugs_follow_github() -> None:
    assert slug("How a message's channel is chosen") == "how-a-messages-channel-is-chosen"
    assert (
        slug("The send path: lanes, many sends in flight, exactly one SMS")
        == "the-send-path-lanes-many-sends-in-flight-exactly-one-sms"
    )
    assert slug("What `streams/rewind.py` guards against") == "what-streamsrewindpy-guards-against"
    assert slug("Statuses and counters (`batch-status`, `GET /batches/{id}`)") == (
        "statuses-and-counters-batch-status-get-batchesid"
    )


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken: list[str] = []
    for number, target in _links(page):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / unquote(file_part)).resolve() if file_part else page
        where = f"{_name(page)}:{number}: {target}"
        if not linked.exists():
            broken.append(f"{where} (no such file)")
        elif fragment and linked.suffix == ".md" and unquote(fragment) not in anchors(linked):
            # Only Markdown has headings to check; a fragment on code (#L10) is the host's.
            broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < README_MAX_LINES, (
        f"README.md has {lines} lines; keep it under {README_MAX_LINES} and move detail to docs/"
    )


def test_the_two_commands_come_first() -> None:
    """A newcomer reads the intro, then the two commands, before anything else."""
    lines = _prose_lines(README.read_text(encoding="utf-8"))
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")]
    assert sections, "README.md has no ## sections"
    end = sections[1] if len(sections) > 1 else len(lines)
    # The commands sit in a fenced block, so read the raw lines of that first section.
    first = "\n".join(README.read_text(encoding="utf-8").splitlines()[sections[0] : end])
    for command in ("make demo", "make test"):
        assert command in first, f"`{command}` is not in README.md's first ## section"


def test_the_readme_links_every_docs_page() -> None:
    """A page nobody links to is a page nobody reads."""
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for _, target in _links(README)
        if not target.startswith(EXTERNAL)
    }
    pages = [*PAGES[1:], REPO / "docs" / "asyncapi.json"]
    missing = [_name(page) for page in pages if page.resolve() not in linked]
    assert not missing, f"README.md links none of: {', '.join(missing)}"
