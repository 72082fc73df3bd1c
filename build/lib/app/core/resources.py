"""Where the files that ship beside the code live: templates/, static/ and migrations/.

In a source checkout (and an editable install, as `make run` and the container use) they are
the top-level folders beside app/. A built wheel carries copies of them inside the package, as
app/_bundle/<name> (setup.py adds them at build time), so `pip install plumbline-*.whl` into a
clean environment migrates and serves from anywhere. The checkout wins when both exist."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
BUNDLED = ("templates", "static", "migrations")
# A file that proves a folder is really ours, not a same-named folder elsewhere.
_MARKERS = {"templates": "base.html", "static": "css/app.css", "migrations": "env.py"}


def resource_dir(name: str) -> Path:
    """The directory of a shipped resource folder; FileNotFoundError names where it looked."""
    if name not in _MARKERS:
        raise ValueError(f"unknown resource folder {name!r}")
    candidates = (_PACKAGE.parent / name, _PACKAGE / "_bundle" / name)
    for candidate in candidates:
        if (candidate / _MARKERS[name]).is_file():
            return candidate
    raise FileNotFoundError(
        f"no {name}/ folder at {' or '.join(str(c) for c in candidates)}: "
        "reinstall Plumbline from a source checkout or a wheel built with its setup.py"
    )
