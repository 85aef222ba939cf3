"gte-bench load against real services on loopback: known latencies, a Gradio-style template, bad input, the CLI and the bench notebook"
import subprocess, sys

import numpy as np
import papermill as pm
import pytest

from gte_bench.corpora import load_texts
from gte_bench.loadtest import (APIS, Reference, Target, run_async, drive, step, template_api, toy_service, toy_tokens,
                                workload)
from gte_bench.records import load_results
from gte_bench.run import bench_notebook


@pytest.fixture(scope='module')
def reqs():
    return workload(load_texts('addresses'), APIS, 'openai', n=256, tokens=toy_tokens)


def test_percentiles_agree_with_injected_latency(reqs):
    """Uniform 30-50 ms injected: open-loop percentiles land on the known quantiles plus a small loopback overhead.
    An open loop also records any pause of this shared machine (a 0.3 s one moved a p90 to 166 ms once), so the step
    gets a second try: one clean step shows the generator measures right; a bug fails both."""
    def off(st):
        return [(p, 30 + 20 * p / 100, st.lat.pct(p)) for p in (10, 50, 90)
                if not 30 + 20 * p / 100 - 0.5 <= st.lat.pct(p) <= 30 + 20 * p / 100 + 8]
    with toy_service(delay_ms=30, jitter_ms=20, seed=1) as toy:
        for attempt in range(2):
            st = run_async(drive(toy.url, reqs, rate=150, duration_s=3, warmup_s=0.3, timeout_s=10, seed=attempt))
            assert st.lat.n > 300 and set(st.status) == {200}
            if not off(st): break
    assert not off(st), off(st)
    lo, hi = st.lat.ci(50)
    assert lo <= st.lat.pct(50) <= hi and hi - lo < 5


def test_template_kind_checks_a_gradio_style_reply(reqs):
    "A template request to /api/predict, its vector read at data.0: honest replies pass, corrupted ones are caught"
    api = template_api('{"data": ["{text}"]}', '/api/predict', vectors='data.0')
    w = workload(load_texts('addresses'), {'template': api}, n=128)
    out = {}
    for name, kw in (('good', {}), ('bad', dict(corrupt_every=20))):
        with toy_service(delay_ms=2, **kw) as toy:
            out[name] = step(Target(toy.url, {'template': api}, w, Reference.toy(), toy.pid), 4, duration_s=1.5, warmup_s=0.2)
    assert out['good']['fid_checked'] > 100 and out['good']['fid_violations'] == 0 and out['good']['held']
    assert out['bad']['fid_violations'] > 0 and not out['bad']['held'] and 'cosine' in out['bad']['fid_first']


def test_bad_input_verdict_fails_a_service_that_answers_5xx():
    "Malformed requests riding with good ones: a 400 is what they should get; a 500 fails the verdict and counts as 5xx"
    w = workload(load_texts('addresses'), APIS, 'openai', bad_share=0.3, n=256, seed=2, tokens=toy_tokens)
    res = {}
    for status in (400, 500):
        with toy_service(delay_ms=2, bad_status=status) as toy:
            res[status] = step(Target(toy.url, APIS, w, Reference.toy(), toy.pid), 4, duration_s=1.5, warmup_s=0.2)
    ok, broken = res[400], res[500]
    assert ok['bad_sent'] > 50 and ok['bad_verdict'] == 'ok' and ok['n_5xx'] == 0 and ok['error_rate'] == 0
    assert broken['bad_verdict'].startswith('failed') and 'got 5xx' in broken['bad_verdict'] and broken['n_5xx'] > 0
    assert broken['error_rate'] == 0                     # the good requests were all answered: the errors are the bad ones'


def test_cli_soak_in_a_child_process(tmp_path):
    "gte-bench load --flow soak as a command against a service it did not start: windows, compliance, the server's leak verdict"
    with toy_service(delay_ms=5) as toy:
        r = subprocess.run([sys.executable, '-c', 'import sys; from gte_bench.cli import main; sys.exit(main())',
                            'load', '--url', toy.url, '--pid', str(toy.pid), '--reference', 'toy', '--flow', 'soak',
                            '--concurrency', '4', '--duration-s', '4', '--warmup-s', '0.5', '--window-s', '1', '--out', str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'slo_compliance=1' in r.stdout and 'server_leak_verdict=' in r.stdout, r.stdout
    df = load_results(tmp_path)
    point = df[df.step.isna()].iloc[0]
    assert point.windows == 4 and point.flow == 'soak' and point.other_cpu_cores < 0.5, point.other_cpu_cores


def test_bench_notebook_runs_under_papermill(tmp_path):
    "bench/service_load.ipynb against the toy service: an SLO search, a record per probe and one for the run"
    with toy_service(delay_ms=20) as toy:
        pm.execute_notebook(str(bench_notebook('service_load')), str(tmp_path / 'run.ipynb'), kernel_name='python3',
                            progress_bar=False, parameters=dict(url=toy.url, pid=toy.pid, reference='toy', flow='search',
                            searches=2, levels='1', max_level=8, slo_ms=1000.0, duration_s=0.6, warmup_s=0.2,
                            telemetry_rate_hz=0, out_dir=str(tmp_path / 'out')))
    df = load_results(tmp_path / 'out')
    point = df[df.step.isna()].iloc[0]
    assert point.capacity == 8 and point.capacities == '8,8' and point.fid_violations == 0
    assert (df.scenario == 'gte_bench.loadtest:service_load').all() and df.step.notna().sum() == 8
    assert sorted(df.search.dropna().unique()) == [0, 1]                 # each probe says which search it belongs to
