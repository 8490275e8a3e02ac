"""The docs generators take a path, and `--help` (or any option) is never taken for one: a
stray file named `--help` once sat in the repository's root."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["celeryctl.permissions", "celeryctl.checks.docs"])
@pytest.mark.parametrize("arg,code", [("--help", 0), ("-h", 0), ("--bogus", 64)])
def test_generators_never_write_a_file_named_like_an_option(tmp_path, module, arg, code):
    p = subprocess.run([sys.executable, "-m", module, arg], cwd=tmp_path, text=True,
                       capture_output=True, timeout=60)
    assert p.returncode == code and "usage:" in p.stdout + p.stderr, p
    assert list(tmp_path.iterdir()) == []


def test_no_file_named_like_an_option_in_the_repository():
    from tests.conftest import ROOT

    assert not [p.name for p in ROOT.iterdir() if p.name.startswith("-")]
