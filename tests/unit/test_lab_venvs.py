"""The lab's virtualenvs of older Celery releases: pins, validity, and a clear, quick failure
when the package index cannot be reached (no network needed: pip is pointed at a closed
loopback port)."""

from __future__ import annotations

import json
import os
import time

import pytest

from celeryctl.lab import venvs
from celeryctl.lab.servers import LabError, free_port


def test_every_version_pins_celery_and_the_kombu_it_shipped_with():
    assert list(venvs.SPECS) == ["5.2", "5.3", "5.5", "5.7"]
    for v, spec in venvs.SPECS.items():
        assert spec.celery.startswith(v + ".")
        names = [r.split("==")[0] for r in spec.requirements]
        assert all("==" in r for r in spec.requirements), spec
        assert len(names) == len(set(names))
        for needed in ("celery", "kombu", "amqp", "vine", "billiard", "redis", "click"):
            assert needed in names, (v, needed)
    assert venvs.SPECS["5.2"].kombu == "5.2.4" and venvs.SPECS["5.3"].kombu == "5.3.7"


def test_parse_versions():
    assert venvs.parse_versions("5.2, 5.7,5.2") == ["5.2", "5.7"]
    assert venvs.parse_versions("5.2.7") == ["5.2"]
    for bad in ("4.4", "5.2.6", ""):
        with pytest.raises(LabError):
            venvs.parse_versions(bad)


def test_validity_is_the_marker(tmp_path):
    spec = venvs.SPECS["5.2"]
    d = venvs.venv_dir("5.2", tmp_path)
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "python").symlink_to(venvs.base_python())
    assert not venvs.is_valid("5.2", tmp_path)  # no marker: an interrupted build
    marker = {"requirements": list(spec.requirements), "base_python": venvs.base_python()}
    (d / venvs.MARKER).write_text(json.dumps(marker))
    assert venvs.is_valid("5.2", tmp_path)
    (d / venvs.MARKER).write_text(json.dumps({**marker, "requirements": ["celery==5.2.6"]}))
    assert not venvs.is_valid("5.2", tmp_path)  # the pins changed since


def test_unreachable_index_fails_fast_and_says_so(tmp_path, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    t0 = time.monotonic()
    with pytest.raises(LabError) as exc:
        venvs.ensure("5.2", base=tmp_path, timeout=60)
    assert time.monotonic() - t0 < 30
    assert "unreachable" in str(exc.value) and "celery==5.2.7" in str(exc.value)
    assert not venvs.is_valid("5.2", tmp_path)
    assert not venvs.venv_dir("5.2", tmp_path).exists()  # nothing half-built left behind


def test_pip_failure_names_the_cause():
    assert "unreachable" in venvs.pip_failure(
        "WARNING: Retrying ... NewConnectionError(...: [Errno 111] Connection refused)")
    assert "not on the package index" in venvs.pip_failure(
        "ERROR: No matching distribution found for celery==9.9.9")
