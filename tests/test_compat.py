"""The compatibility runs: `make compat` (the declared floor of transformers overlaid on the venv) and `make floor`
(the floors of torch and transformers in a venv of their own)."""
import os, re, tomllib
from pathlib import Path

import pytest
import torch
import transformers

WANT = os.environ.get('GTE_BENCH_EXPECT_TRANSFORMERS')
WANT_TORCH = os.environ.get('GTE_BENCH_EXPECT_TORCH')


def _floor(name:str) -> str:
    "The lower bound pyproject.toml declares for a dependency"
    deps = tomllib.loads((Path(__file__).parents[1] / 'pyproject.toml').read_text())['project']['dependencies']
    return next(re.search(r'>=([\d.]+)', d).group(1) for d in deps if re.match(rf'{name}\b', d))


@pytest.mark.skipif(not WANT, reason='only in the compatibility run, which sets GTE_BENCH_EXPECT_TRANSFORMERS')
def test_overlay_is_what_runs():
    "The overlay shadows the venv's transformers, and it is the floor that pyproject.toml declares"
    assert transformers.__version__ == WANT, f'the overlay did not take effect: transformers {transformers.__version__}'
    floor = _floor('transformers')
    assert WANT.startswith(floor + '.') or WANT == floor, f'pyproject declares transformers>={floor}, the run tests {WANT}'


def test_records_name_the_transformers_that_ran():
    "The environment block of a record reports the transformers actually imported, overlay or not"
    from gte_bench.env import capture_env
    assert capture_env()['transformers'] == transformers.__version__


@pytest.mark.skipif(not WANT_TORCH, reason='only in the floor run (`make floor`), which sets GTE_BENCH_EXPECT_TORCH')
def test_torch_floor_is_what_runs():
    "The floor run imports the torch it asked for, a release of the minor version pyproject.toml declares as the floor"
    assert torch.__version__.split('+')[0] == WANT_TORCH, f'asked for torch {WANT_TORCH}, imported {torch.__version__}'
    floor = _floor('torch')
    assert WANT_TORCH.startswith(floor + '.') or WANT_TORCH == floor, f'pyproject declares torch>={floor}, the run tests {WANT_TORCH}'
