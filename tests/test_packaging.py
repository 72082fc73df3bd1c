"""An installed wheel is a complete Plumbline: it migrates, serves every page with its assets,
and its client imports beside a project that has an `app` package of its own.

The wheel is built from this checkout and installed, without its dependencies, into a fresh
virtual environment whose only other path is this environment's site-packages (added by a
.pth line, which does not run this checkout's editable-install hook): so `app`,
`plumbline`, templates/, static/ and migrations/ can only come from the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIP = (sys.executable, "-m", "pip")
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "app",
    "plumbline",
    "templates",
    "static",
    "migrations",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh environment with only the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ beside the sources, and two test workers
    # (or a developer's tree) must not share it.
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [
            *PIP,
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-qw",
            str(work / "dist"),
        ],
        check=True,
        cwd=work,
    )
    [wheel] = (work / "dist").glob("plumbline-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dependencies = sysconfig.get_paths()["purelib"]
    Path(purelib, "dependencies.pth").write_text(dependencies + "\n")
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
    )
    return venv / "bin"


def run(bin_dir: Path, args: list[str], cwd: Path, **env: str) -> str:
    result = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_wheel_migrates_and_serves_every_page_and_asset(
    installed: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'wheel.db'}"
    env = {"PLUMBLINE_DATABASE_URL": url, "PLUMBLINE_DATA_DIR": str(tmp_path)}
    run(installed, ["plumbline", "migrate"], tmp_path, **env)
    key = (
        run(
            installed,
            ["plumbline", "keys", "create", "--project", "p", "--role", "admin"],
            tmp_path,
            **env,
        )
        .strip()
        .splitlines()[-1]
    )
    script = textwrap.dedent(
        """
        import sys
        from fastapi.testclient import TestClient
        import app
        from app.core.settings import Settings
        from app.main import create_app

        assert "site-packages" in app.__file__, app.__file__
        settings = Settings(run_workers=False, run_scheduler=False)
        with TestClient(create_app(settings)) as client:
            for asset in ("/static/css/app.css", "/static/js/app.js",
                          "/static/vendor/plotly.min.js", "/static/favicon.svg"):
                assert client.get(asset).status_code == 200, asset
            login = client.get("/login")
            assert login.status_code == 200
            csrf = login.text.split('name="csrf_token" value="')[1].split('"')[0]
            signed_in = client.post("/login", data={"api_key": sys.argv[1], "csrf_token": csrf})
            assert signed_in.status_code == 200, signed_in.status_code
            for page in ("/", "/drift", "/alerts", "/traces", "/webhooks"):
                answer = client.get(page)
                assert answer.status_code == 200, (page, answer.status_code)
        print("ok")
        """
    )
    assert run(installed, ["python", "-c", script, key], tmp_path, **env).strip() == "ok"


def test_the_client_imports_beside_a_project_with_its_own_app_package(
    installed: Path, tmp_path: Path
) -> None:
    own = tmp_path / "app"
    own.mkdir()
    (own / "__init__.py").write_text("OURS = True\n")
    script = (
        "import app; assert app.OURS\n"
        "from plumbline import Plumbline\n"
        "from plumbline.evals import Groundedness, IsCompliant, JSONValidation, TaskCompletion\n"
        "score = Groundedness().evaluate(output='Paris', context='Paris is in France').score\n"
        "print(Plumbline.__name__, round(score, 2))\n"
    )
    out = run(installed, ["python", "-c", script], tmp_path)
    assert out.split()[0] == "Plumbline" and float(out.split()[1]) > 0
