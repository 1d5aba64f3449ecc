"""What the benchmarks share: a section of a Markdown page written or replaced, and the drift tables' frame."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section under *heading* (up to the next ``## ``) of the page at *path*, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if heading in text:
        head, _, rest = text.partition(heading)
        following = rest.find("\n## ")
        text = head + section + (rest[following + 1 :] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def drift_section(title: str, intro: str, rows: list[str], same_verdict: bool | None) -> str:
    """A drift benchmark's section: its title, the command and data, the table, and whether the verdicts agree."""
    verdict = [] if same_verdict is None else ["Same verdicts: " + ("yes" if same_verdict else "**no**")]
    return "\n".join([title, "", intro, "", *rows, "", *verdict]) + "\n"
