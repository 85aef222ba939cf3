"The compatibility run (`make compat`): the suite on the declared floor of transformers, overlaid on the venv."
import os, re, tomllib
from pathlib import Path

import pytest
import transformers

WANT = os.environ.get('GTE_BENCH_EXPECT_TRANSFORMERS')


@pytest.mark.skipif(not WANT, reason='only in the compatibility run, which sets GTE_BENCH_EXPECT_TRANSFORMERS')
def test_overlay_is_what_runs():
    "The overlay shadows the venv's transformers, and it is the floor that pyproject.toml declares"
    assert transformers.__version__ == WANT, f'the overlay did not take effect: transformers {transformers.__version__}'
    deps = tomllib.loads((Path(__file__).parents[1] / 'pyproject.toml').read_text())['project']['dependencies']
    floor = next(re.search(r'>=([\d.]+)', d).group(1) for d in deps if d.startswith('transformers'))
    assert WANT.startswith(floor + '.') or WANT == floor, f'pyproject declares transformers>={floor}, the run tests {WANT}'


def test_records_name_the_transformers_that_ran():
    "The environment block of a record reports the transformers actually imported, overlay or not"
    from gte_bench.env import capture_env
    assert capture_env()['transformers'] == transformers.__version__
