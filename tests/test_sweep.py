"""Sweeps through the CLI: failures recorded, points skipped on rerun, a killed sweep finished by the next run and
stopped quietly, one sweep per results folder, repeats, and sweep files checked before anything runs."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import psutil
import pytest
import yaml

from gte_bench.records import config_hash, load_results
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
    spec = sweep_file(dict(batch_size=[1, 2, 3]), duration_s=1.0)
    out, runs = tmp_path / 'res', tmp_path / 'runs'
    p = subprocess.Popen([CLI, 'sweep', str(spec), '--out', str(out), '--runs', str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while len(list(out.glob('*.parquet'))) < 1 and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    time.sleep(1.0)                                          # land inside the next point
    if sig == signal.SIGINT: os.killpg(p.pid, sig)           # Ctrl-C: the terminal signals the whole group
    else: p.send_signal(sig)                                 # kill: the sweep process alone
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stdout + stderr
    assert len(stderr.splitlines()) == 1 and 'finished records are kept' in stderr, stderr   # one line, no traceback
    why = 'interrupted' if sig == signal.SIGINT else 'stopped by SIGTERM'
    assert re.match(f'gte-bench sweep: {why} after [0-2] of 3 runs; ', stderr), stderr
    assert 'Traceback' not in stdout + stderr, stdout + stderr
    before, df = _ids(out)
    assert 1 <= len(before) < 3 and set(df.status) == {'ok'}
    assert not list(out.glob('.*.tmp')), 'no temporary file left behind'
    assert not (out / '.sweep.lock').exists(), 'the folder is released'

    r = gte_bench('sweep', spec, '--out', out, '--runs', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    after, df = _ids(out)
    assert len(after) == 3 and set(df.status) == {'ok'}
    assert {h: after[h] for h in before} == before           # finished points were not redone



def _running_cell(nb_path:Path, text:str) -> bool:
    "Whether papermill marks the cell of `nb_path` whose source holds `text` as running"
    try: nb = json.loads(nb_path.read_text())
    except (OSError, ValueError): return False
    return any(text in ''.join(c['source']) and c['metadata'].get('papermill', {}).get('status') == 'running' for c in nb['cells'])


def _interrupted_in_a_cell(nb:dict) -> bool:
    """Whether a cell of the executed notebook `nb` ended with KeyboardInterrupt: as an error output, or as the plain
    traceback IPython falls back to when it cannot format one (an interrupt inside an import, in a frame with no line)"""
    for c in nb['cells']:
        outs = c.get('outputs', [])
        if any(o.get('ename') == 'KeyboardInterrupt' for o in outs): return True
        text = ''.join(''.join(o.get('text', '')) for o in outs if o.get('output_type') == 'stream')
        if c['metadata'].get('papermill', {}).get('exception') and 'Falling back to standard exception' in text \
           and re.search(r'^KeyboardInterrupt\b', text, re.M): return True
    return False


def test_interrupted_inside_a_cell_prints_one_line(sweep_file, tmp_path):
    "SIGTERM while the kernel runs the benchmark cell: the kernel is interrupted and shut down idle, no ZMQError traceback"
    spec = sweep_file(dict(batch_size=[1]), duration_s=60.0, min_iters=100000, max_iters=100000)
    out, runs = tmp_path / 'res', tmp_path / 'runs'
    p = subprocess.Popen([CLI, 'sweep', str(spec), '--out', str(out), '--runs', str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while not any(_running_cell(f, 'run_bench(') for f in runs.glob('*.ipynb')) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(3.0)                                          # well inside the cell: loading the model, or timing it
    kernels = [c for c in psutil.Process(p.pid).children(recursive=True) if 'ipykernel' in ' '.join(c.cmdline())]
    assert kernels, 'a kernel runs the point'
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stdout + stderr
    assert stderr.splitlines() == [stderr.strip()] and stderr.startswith('gte-bench sweep: stopped by SIGTERM after 0 of 1 runs'), stderr
    assert 'ZMQError' not in stdout + stderr and 'Traceback' not in stdout + stderr, stdout + stderr
    executed = json.loads(next(runs.glob('*.ipynb')).read_text())       # the cell ended with the interrupt, in the kernel
    assert _interrupted_in_a_cell(executed), executed['cells']
    assert not list(out.glob('*.parquet')) and not (out / '.sweep.lock').exists()   # no record of the stopped point; released
    time.sleep(1.0)
    assert all(not k.is_running() or k.status() == psutil.STATUS_ZOMBIE for k in kernels), 'the kernel was shut down'


def test_a_cell_past_timeout_is_recorded_quietly(sweep_file, tmp_path):
    "A cell that runs past --timeout: the point's error record says so, the kernel is interrupted before its shutdown, stderr stays empty"
    spec = sweep_file(dict(batch_size=[1]), duration_s=60.0, min_iters=100000, max_iters=100000)
    r = gte_bench('sweep', spec, '--out', tmp_path / 'res', '--runs', tmp_path / 'runs', '--timeout', 8)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == '', r.stderr                          # no ZMQError traceback, no papermill log line
    df = load_results(tmp_path / 'res')
    assert list(df.status) == ['error'] and 'CellTimeoutError' in df.error[0], df.error[0]

NAP = """
import time
from gte_bench.stats import run_stats

def nap(run, s: float = 0.0, calls: int = 3):
    "Sleep `calls` times for `s` seconds each: a point that costs nothing but its process"
    run.phase('measure')
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter(); time.sleep(s); lat.append((time.perf_counter() - t0) * 1e3)
    return run_stats(lat)

def held(run, qps: float = 5.0):
    "A summary without latency percentiles, as a load point's"
    return dict(max_qps=qps)
"""


@pytest.fixture
def nap_sweep(tmp_path):
    "Write a scenario sweep over tests' own `nap` scenario (importable through PYTHONPATH); returns (path, env)"
    (tmp_path / 'naps.py').write_text(NAP)
    env = {**os.environ, 'PYTHONPATH': f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           'PATH': str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', '')}
    def make(grid, name='naps', scenario='naps:nap', **top):
        p = tmp_path / f'{name}.yaml'
        p.write_text(yaml.safe_dump(dict(scenario=scenario, fixed=dict(telemetry_rate_hz=0), grid=grid, **top)))
        return p
    return make, env


def _sweep(env, *args):
    return subprocess.run([CLI, 'sweep', *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def test_one_sweep_per_results_folder(nap_sweep, tmp_path):
    "A second sweep into a folder in use is refused, naming the first; the lock goes with SIGTERM; a killed sweep's is taken over"
    make, env = nap_sweep
    spec, out = make(dict(s=[30.0])), tmp_path / 'res'
    first = subprocess.Popen([CLI, 'sweep', str(spec), '--out', str(out), '--runs', str(tmp_path / 'runs')], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / '.sweep.lock').exists() and time.time() < deadline and first.poll() is None: time.sleep(0.1)
    time.sleep(0.5)
    r = _sweep(env, make(dict(s=[0.0]), name='other'), '--out', out)
    assert r.returncode == 2, r.stdout + r.stderr
    msg = r.stderr.strip()
    assert msg.startswith(f'gte-bench sweep: {out} is in use by sweep PID {first.pid} (gte-bench sweep {spec} --out {out}'), msg
    assert ' since ' in msg and len(r.stderr.splitlines()) == 1, msg
    assert not list(out.glob('*.parquet'))                   # the refused sweep ran nothing

    first.send_signal(signal.SIGTERM)                        # released on SIGTERM
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and len(stderr.splitlines()) == 1, stdout + stderr
    assert not (out / '.sweep.lock').exists()

    killed = subprocess.Popen([CLI, 'sweep', str(spec), '--out', str(out)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not (out / '.sweep.lock').exists() and time.time() < deadline: time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(killed.pid, signal.SIGKILL); killed.communicate(timeout=60)     # no chance to clean up: the file stays
    assert (out / '.sweep.lock').exists()
    r = _sweep(env, make(dict(s=[0.0]), name='other'), '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'note: taking over the lock of {out} left by sweep PID {killed.pid}' in r.stdout and 'no longer running' in r.stdout, r.stdout
    assert not (out / '.sweep.lock').exists() and len(load_results(out)) == 1


def test_repeats_interleave_and_resume(nap_sweep, tmp_path, monkeypatch):
    "repeat: every point N times, all points before the next round; a record each, with `repeat` in its config; resumable"
    from gte_bench.run import scenario_defaults
    from gte_bench.sweep import expand_grid, load_sweep
    make, env = nap_sweep
    out = tmp_path / 'res'
    spec = make(dict(s=[0.0, 0.001]), repeat=2)
    monkeypatch.syspath_prepend(str(tmp_path))
    pts = expand_grid(load_sweep(spec), scenario_defaults('naps:nap'))     # the points' configs, as the sweep makes them
    h = lambda s, **k: config_hash({**next(p for p in pts if p['s'] == s), **k})
    r = _sweep(env, spec, '--out', out, '--runs', tmp_path / 'runs')
    assert r.returncode == 0, r.stdout + r.stderr
    assert '2 points x 2 repeats (repeat=0..1), 0 already recorded, 4 to run' in r.stdout, r.stdout
    lines = [re.match(r'(ok +.*?)  ', l).group(1) for l in r.stdout.splitlines() if l.startswith('ok ')]
    assert lines == ['ok    s=0.0 repeat=0', 'ok    s=0.001 repeat=0', 'ok    s=0.0 repeat=1', 'ok    s=0.001 repeat=1'], r.stdout
    df = load_results(out)
    assert sorted(zip(df.s, df.repeat)) == [(0.0, 0), (0.0, 1), (0.001, 0), (0.001, 1)]
    assert set(df.config_hash) == {h(s, repeat=k) for s in (0.0, 0.001) for k in (0, 1)}    # the point's config plus repeat

    (out / f"{h(0.0, repeat=1)}.parquet").unlink()                                 # lose one repeat: only it runs again
    r = _sweep(env, spec, '--out', out, '--runs', tmp_path / 'runs', '--repeat', 3)       # and --repeat wins over the file
    assert '2 points x 3 repeats (repeat=0..2), 3 already recorded, 3 to run' in r.stdout, r.stdout
    df2 = load_results(out)
    assert len(df2) == 6 and sorted(df2.repeat) == [0, 0, 1, 1, 2, 2]
    kept = dict(zip(df.config_hash, df.run_id))
    assert sum(dict(zip(df2.config_hash, df2.run_id)).get(h) == i for h, i in kept.items()) == 3   # the others were not redone

    r = _sweep(env, make(dict(s=[0.0])), '--out', tmp_path / 'once')                   # one run: no repeat key, the old hash
    one = load_results(tmp_path / 'once')
    assert r.returncode == 0 and 'repeat' not in one.columns and list(one.config_hash) == [h(0.0)]


def test_notebook_sweep_repeats(sweep_file, tmp_path):
    "A notebook sweep's repeats are records of their own too, and papermill does not warn about the `repeat` it passes"
    spec = sweep_file(dict(batch_size=[1]), name='rep')
    r = gte_bench('sweep', spec, '--out', tmp_path / 'res', '--runs', tmp_path / 'runs', '--repeat', 2)
    assert r.returncode == 0, r.stdout + r.stderr
    df = load_results(tmp_path / 'res')
    assert sorted(df.repeat) == [0, 1] and set(df.status) == {'ok'} and df.config_hash.nunique() == 2
    assert 'unknown parameter' not in r.stderr, r.stderr


def test_wrong_types_fail_before_any_kernel(sweep_file, nap_sweep, tmp_path):
    "A value whose type is not its default's is a one-line error naming it, before anything runs"
    r = gte_bench('sweep', sweep_file(dict(batch_size=['eight'])), '--out', tmp_path / 'o')
    assert r.returncode == 2 and r.stderr == "gte-bench sweep: grid.batch_size: 'eight' is a string, but batch_size takes a whole number, like its default 1\n", r.stderr
    assert not (tmp_path / 'o').exists()
    r = gte_bench('sweep', sweep_file(dict(batch_size=[1]), duration_s='3s'), '--out', tmp_path / 'o')
    assert r.returncode == 2 and "fixed.duration_s: '3s' is a string, but duration_s takes a number, like its default 1.0" in r.stderr, r.stderr
    make, env = nap_sweep
    r = _sweep(env, make(dict(calls=[2.5])), '--out', tmp_path / 'o')
    assert r.returncode == 2 and 'grid.calls: 2.5 is a number, but calls takes a whole number, like its default 3' in r.stderr, r.stderr
    assert not (tmp_path / 'o').exists()


def test_progress_lines_show_only_what_was_measured(nap_sweep, tmp_path):
    "A point whose summary has no latency percentiles (a load point's) prints what it has, no 'nan'"
    make, env = nap_sweep
    r = _sweep(env, make(dict(qps=[7.5]), scenario='naps:held'), '--out', tmp_path / 'res')
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith('ok '))
    assert 'capacity 7.5 qps' in line and 'nan' not in line and 'p50' not in line, line


SWEEPS = {p.stem: p for p in sorted((Path(__file__).resolve().parents[1] / 'sweeps').glob('*.yaml'))}


def _points(name:str) -> tuple[dict, list[dict]]:
    "A committed sweep file and its grid points, expanded against its notebook's or scenario's parameters"
    from gte_bench.run import bench_notebook, notebook_defaults, scenario_defaults
    from gte_bench.sweep import expand_grid, load_sweep
    spec = load_sweep(SWEEPS[name])
    defaults = scenario_defaults(spec['scenario']) if spec.get('scenario') else notebook_defaults(bench_notebook(spec['notebook']))
    return spec, expand_grid(spec, defaults)


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
