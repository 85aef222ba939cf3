"""Numbers on a shared machine: a sweep run while other processes spin on the same cores has its records flagged
`contended`, with the reason; the same sweep on an idle machine is not flagged."""
import os, subprocess, sys, time

import pytest
import yaml

from gte_bench.records import load_results
from conftest import gte_bench


def _sweep(tmp_path, name):
    spec = tmp_path / f'{name}.yaml'
    spec.write_text(yaml.safe_dump(dict(notebook='embed_latency', grid=dict(batch_size=[1]), fixed=dict(
        model='gte-small-zh', max_length=32, warmup=2, min_iters=30, duration_s=1.5, breakdown_iters=0, telemetry_rate_hz=10))))
    r = gte_bench('sweep', spec, '--out', tmp_path / name, '--runs', tmp_path / 'runs')
    assert r.returncode == 0, r.stdout + r.stderr
    return load_results(tmp_path / name)


def test_a_sweep_beside_a_cpu_hog_is_flagged(tmp_path):
    hogs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(os.cpu_count() or 2)]
    try: df = _sweep(tmp_path, 'hogged')
    finally:
        for p in hogs: p.kill()
        for p in hogs: p.wait(timeout=10)
    assert len(df) == 1 and (df.status == 'ok').all()
    assert df['flags'].str.contains('contended').all(), df[['flags', 'other_cpu_cores', 'flag_reason']]
    assert (df.other_cpu_cores >= 0.5).all() and df.flag_reason.str.contains('CPU cores busy').all()
    assert (df.contention_phase == 'measure').all() and (df.load_avg_after >= 0).all()


def test_the_same_sweep_on_an_idle_machine_is_not_flagged(tmp_path):
    time.sleep(5)                       # let what the previous test left behind settle
    df = _sweep(tmp_path, 'idle')
    assert len(df) == 1 and (df.status == 'ok').all()
    assert (df['flags'] == '').all(), df[['flags', 'other_cpu_cores', 'flag_reason', 'spread_unexplained']]
    assert (df.other_cpu_cores < 0.5).all()
