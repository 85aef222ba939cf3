"""nbdev's doc processing of every notebook runs in the docs build (tools/docs, which `make test` runs and
tests/test_site.py runs when alone); tools/check-docs runs the same processing on given notebooks."""
import subprocess, sys

import pytest

from conftest import ROOT

def test_check_docs_catches_a_mixed_cell(tmp_path):
    "The check can fail: a cell mixing an import with a test is reported"
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# T\n\n> s'),
                                         nbformat.v4.new_code_cell('#| default_exp demo'),
                                         nbformat.v4.new_code_cell('#| export\ndef tau(): return 6.28'),
                                         nbformat.v4.new_code_cell('import math\nx = math.pi\nassert x > 3')])
    nbformat.write(nb, str(tmp_path / 'mixed.ipynb'))
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'check-docs'), str(tmp_path / 'mixed.ipynb')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'mixes imports with other code' in r.stderr and 'x = math.pi' in r.stderr
