"""The README and the documentation: every relative link and image resolves, and the README
stays a page for users."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "petloop" / "models").glob("*/MODEL_CARD.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_targets(text: str) -> list[str]:
    """The targets of the page's Markdown links and images that point into the repository
    (no scheme, no mail, no pure anchor); code spans and fenced blocks are not links."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append(unquote(target.split("#", 1)[0]))
    return out


def test_the_link_finder_sees_links_and_images_but_not_code():
    text = ("see [a](docs/a.md#x) and ![pic](docs/p.png \"title\"), [web](https://x.org), "
            "[top](#top), `[not](a link)`\n```\n[nor](this.md)\n```\n")
    assert relative_targets(text) == ["docs/a.md", "docs/p.png"]


def test_every_relative_link_and_image_resolves():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 5
    broken = []
    for page in PAGES:
        for target in relative_targets(page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_reached_from_the_readme():
    readme = relative_targets((ROOT / "README.md").read_text())
    reached = {(ROOT / t).resolve() for t in readme}
    unreached = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in reached]
    assert not unreached, f"docs pages the README does not link: {unreached}"


def test_the_readme_is_short_and_gives_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "make demo" in text and "make test" in text
