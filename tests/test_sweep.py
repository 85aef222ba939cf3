"Sweeps through the CLI: failures recorded, points skipped on rerun, and a killed sweep finished by the next run."
import os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from gte_bench.records import load_results
from conftest import CLI, gte_bench


def _ids(out):
    df = load_results(out)
    return dict(zip(df.config_hash, df.run_id)), df


def test_failures_are_recorded_and_rerun_skips(sweep_file, tmp_path):
    spec = sweep_file(dict(max_length=[16, 9999], batch_size=[1]))
    out, runs = tmp_path / 'res', tmp_path / 'runs'
    r = gte_bench('sweep', spec, '--out', out, '--runs', runs)
    assert r.returncode == 1, r.stderr          # one point failed: non-zero, but the sweep went on
    ids, df = _ids(out)
    assert sorted(df.status) == ['error', 'ok']
    err = df[df.status == 'error'].iloc[0]
    assert 'max_length=9999 is outside 1..512' in err.error and str(runs) in err.error
    assert err.max_length == 9999 and err.env_torch          # config and environment kept on failure

    r = gte_bench('sweep', spec, '--out', out, '--runs', runs)
    assert r.returncode == 0 and '2 already recorded, 0 to run' in r.stdout + r.stderr
    assert _ids(out)[0] == ids                               # nothing redone

    r = gte_bench('sweep', spec, '--out', out, '--runs', runs, '--retry-failed')
    assert '1 already recorded, 1 to run' in r.stdout + r.stderr
    ids2, df2 = _ids(out)
    ok_hash = df[df.status == 'ok'].config_hash.iloc[0]
    assert ids2[ok_hash] == ids[ok_hash]                     # the ok point was not rerun
    assert ids2[err.config_hash] != ids[err.config_hash]     # the failed one was


def test_bad_sweep_file_is_a_clear_error(sweep_file, tmp_path):
    r = gte_bench('sweep', sweep_file(dict(batchsize=[1, 2])), '--out', tmp_path / 'o')
    assert r.returncode == 2 and "does not take: ['batchsize']" in r.stderr
    assert not (tmp_path / 'o').exists()                     # nothing ran


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['ctrl-c', 'kill'])
def test_interrupted_sweep_resumes(sweep_file, tmp_path, sig):
    spec = sweep_file(dict(batch_size=[1, 2, 3, 4]), duration_s=1.0)
    out, runs = tmp_path / 'res', tmp_path / 'runs'
    p = subprocess.Popen([CLI, 'sweep', str(spec), '--out', str(out), '--runs', str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 240
    while len(list(out.glob('*.parquet'))) < 1 and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    time.sleep(1.0)                                          # land inside the next point
    if sig == signal.SIGINT: os.killpg(p.pid, sig)           # Ctrl-C: the terminal signals the whole group
    else: p.send_signal(sig)                                 # kill: the sweep process alone
    log = p.communicate(timeout=120)[0]
    assert p.returncode != 0, log
    assert 'finished records are kept' in log
    before, df = _ids(out)
    assert 1 <= len(before) < 4 and set(df.status) == {'ok'}
    assert not list(out.glob('.*.tmp')), 'no temporary file left behind'

    r = gte_bench('sweep', spec, '--out', out, '--runs', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    after, df = _ids(out)
    assert len(after) == 4 and set(df.status) == {'ok'}
    assert {h: after[h] for h in before} == before           # finished points were not redone


SWEEPS = {p.stem: p for p in sorted((Path(__file__).resolve().parents[1] / 'sweeps').glob('*.yaml'))}


def _points(name:str) -> tuple[dict, list[dict]]:
    "A committed sweep file and its grid points, expanded against its notebook's parameters"
    from gte_bench.run import bench_notebook, notebook_defaults
    from gte_bench.sweep import expand_grid, load_sweep
    spec = load_sweep(SWEEPS[name])
    return spec, expand_grid(spec, notebook_defaults(bench_notebook(spec['notebook'])))


@pytest.mark.parametrize('name', SWEEPS)
def test_committed_sweeps_expand(name):
    "Every committed sweep file loads and names only parameters its notebook takes, so it runs as written"
    spec, pts = _points(name)
    assert pts and spec.get('description'), name


def test_soak_sweeps_are_soaks():
    "The soak sweeps time long enough for the leak check to give a verdict, and sample memory over it"
    assert set(SWEEPS) >= {'soak-cpu', 'soak-gpu'}
    for name in ('soak-cpu', 'soak-gpu'):
        for p in _points(name)[1]:
            assert p['duration_s'] >= 1800 and p['duration_s'] - p['soak_warmup_s'] >= p['soak_min_s'] and p['telemetry_rate_hz'] > 0
            assert p['max_iters'] * 0.001 > p['duration_s']        # the count limit cannot end it early at 1 ms a request
