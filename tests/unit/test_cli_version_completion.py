"""`celeryctl --version` / `celeryctl version` (issue 13 item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from tests.conftest import _cli_env, run_cli

# --- version -----------------------------------------------------------------------------

LIBS = {"celery": "celery", "kombu": "kombu", "redis": "redis-py", "pika": "pika",
        "requests": "requests", "rich": "rich", "typer": "typer"}


def test_version_names_celeryctl_and_its_libraries():
    from celeryctl import __version__

    code, out, err, _ = run_cli("--version")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"celeryctl {__version__}"
    rows = dict(line.split(None, 1) for line in lines[1:])
    for dist, label in LIBS.items():
        assert rows[label] == metadata.version(dist)
    v = sys.version_info
    assert rows["Python"].startswith(f"{v.major}.{v.minor}.{v.micro} (")
    # eager: wins over a subcommand, which then never runs (no broker is needed)
    assert run_cli("--version", "workers")[:2] == (0, out)


def test_version_does_not_import_the_libraries():
    """Versions come from the installed metadata: --version stays as fast as --help."""
    code = ("import sys; from celeryctl.cli import run; rc = run(['--version']); "
            "heavy = [m for m in ('celery', 'kombu', 'redis', 'pika', 'requests', 'rich') "
            "if m in sys.modules]; print(rc, heavy, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=_cli_env(None))
    assert p.stderr.strip() == "0 []"


def test_version_json():
    from celeryctl import __version__

    code, out, err, _ = run_cli("version", "--format", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["schema"] == 1 and doc["celeryctl"] == __version__
    assert doc["packages"] == {d: metadata.version(d) for d in LIBS}
    assert doc["python"]["version"].startswith(f"{sys.version_info.major}.")
    assert run_cli("version")[1] == run_cli("--version")[1]
    code, out, err, _ = run_cli("version", "-f", "yaml")
    assert code == 64 and "--format must be table or json" in err and "Traceback" not in err


def test_version_text_for_a_missing_library():
    from celeryctl.cli import version_text, versions

    v = versions()
    v["packages"]["pika"] = None
    assert "  pika      not installed\n" in version_text(v)
