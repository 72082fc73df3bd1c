"""Every template the code renders, and every static file a template links, exists where the
app looks for it (top-level templates/ and static/): a moved or misspelled file fails here,
not on the one page nobody opened."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, meta

from app.core.resources import resource_dir

ROOT = Path(__file__).resolve().parents[2]
RENDERED = re.compile(r"""render\(\s*request,\s*"([^"]+\.html)\"""")
STATIC = re.compile(r"""/static/([\w./-]+)""")


def rendered_templates() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        names.update(RENDERED.findall(path.read_text()))
    return names


def test_the_app_finds_the_top_level_folders() -> None:
    assert resource_dir("templates") == ROOT / "templates"
    assert resource_dir("static") == ROOT / "static"
    assert resource_dir("migrations") == ROOT / "migrations"
    assert not (ROOT / "app" / "web" / "templates").exists()
    assert not (ROOT / "app" / "web" / "static").exists()


def test_every_rendered_template_and_what_it_includes_exists() -> None:
    templates = ROOT / "templates"
    names = rendered_templates() | {"web/error.html"}
    assert len(names) >= 16, names  # the finder found the pages' render calls
    env = Environment(loader=FileSystemLoader(templates))
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        assert (templates / name).is_file(), f"{name} is rendered but missing"
        source = (templates / name).read_text()
        pending.extend(meta.find_referenced_templates(env.parse(source)))  # type: ignore[arg-type]
    unused = {str(p.relative_to(templates)) for p in templates.rglob("*.html")} - seen
    assert not unused, f"templates no page renders: {sorted(unused)}"


def test_every_static_file_a_template_links_exists() -> None:
    linked = set()
    for path in (ROOT / "templates").rglob("*.html"):
        linked.update(STATIC.findall(path.read_text()))
    assert "vendor/plotly.min.js" in linked
    for name in linked:
        assert (ROOT / "static" / name).is_file(), f"/static/{name} is linked but missing"
