import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / 'gte-bench')


def gte_bench(*args, timeout=600, **kw):
    "Run the gte-bench console script of this interpreter; returns the CompletedProcess"
    env = {**os.environ, 'PATH': str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', '')}
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.fixture
def sweep_file(tmp_path):
    "Write a sweep YAML with a small, fast grid of the gte-small-zh preset; returns its path"
    def make(grid, name='t', **fixed):
        import yaml
        fixed = {'model': 'gte-small-zh', 'warmup': 1, 'min_iters': 3, 'duration_s': 0.0, **fixed}
        p = tmp_path / f'{name}.yaml'
        p.write_text(yaml.safe_dump(dict(notebook='embed_latency', fixed=fixed, grid=grid)))
        return p
    return make
