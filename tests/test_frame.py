"""The frame end to end: a scenario written as one function with one report section, run by a sweep with no notebook;
the three model families under the same toggles, each with its fidelity records."""
import sys, textwrap

import pytest
import yaml

from gte_bench.models import small_checkpoint
from gte_bench.records import load_results
from gte_bench.run import run_scenario
from conftest import gte_bench

SCENARIO = '''
import time
from gte_bench.stats import run_stats
from gte_bench.report import Table, register_section

def nap(run, ms: float = 1.0, calls: int = 8):
    "Sleeps of `ms`, timed like requests"
    run.keep(planned_ms=ms)
    run.phase('measure')
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter(); time.sleep(ms / 1e3); lat.append((time.perf_counter() - t0) * 1e3)
    return run_stats(lat)

register_section('nap_bench:nap', [Table(lambda r: r.sort_values('ms')[['ms', 'n', 'p50_ms', 'planned_ms']], 'Naps')],
                 title='Naps against their plan')
'''


def test_a_scenario_is_one_function_with_one_report_section(tmp_path, monkeypatch):
    (tmp_path / 'nap_bench.py').write_text(textwrap.dedent(SCENARIO))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv('PYTHONPATH', str(tmp_path))
    spec = tmp_path / 'naps.yaml'
    spec.write_text(yaml.safe_dump(dict(scenario='nap_bench:nap', description='naps', fixed=dict(telemetry_rate_hz=50, calls=10),
                                        grid=dict(ms=[10.0, 30.0]))))
    out = tmp_path / 'res'
    r = gte_bench('sweep', spec, '--out', out, '--runs', tmp_path / 'runs')
    assert r.returncode == 0, r.stdout + r.stderr
    df = load_results(out).sort_values('ms')
    assert list(df.status) == ['ok', 'ok'] and list(df.n) == [10, 10] and list(df.planned_ms) == [10.0, 30.0]
    assert (df.p50_ms >= df.ms).all() and (df.telemetry_phase == 'measure').all()
    assert (out / 'timelines').is_dir() and len(list((out / 'timelines').glob('*.parquet'))) == 2
    import nap_bench                                         # the section registers where the scenario lives
    from gte_bench.report import write_report
    md = write_report(out)['markdown'].read_text()
    assert '## Naps against their plan' in md and '### Naps' in md and '| 30 | 10 |' in md
    assert 'latency_vs_batch' not in md                       # not a latency run: no latency plots


def test_a_failing_scenario_keeps_what_it_measured(tmp_path):
    from gte_bench.scenarios import scenario
    @scenario('half-done')
    def half_done(run, steps:int=3):
        run.record(dict(p50_ms=1.0), mode='first-step')
        run.keep(load_s=2.5)
        raise MemoryError('the second step did not fit')
    with pytest.raises(MemoryError):
        run_scenario('half-done', dict(scenario='half-done', telemetry_rate_hz=0), tmp_path)
    df = load_results(tmp_path).set_index('status')
    assert df.loc['ok', 'mode'] == 'first-step' and df.loc['ok', 'p50_ms'] == 1.0
    assert df.loc['error', 'error'] == 'MemoryError: the second step did not fit' and df.loc['error', 'load_s'] == 2.5


@pytest.mark.parametrize('task,fid', [('match', 'fid_label_agree'), ('extract', 'fid_span_f1'), ('embed', 'fid_ccos_min')])
def test_every_family_under_the_same_toggles(tmp_path, task, fid):
    "One ablation per family, same toggle sets: each variant measured with the family's own fidelity"
    model = str(small_checkpoint(tmp_path / 'model', task))
    corpus = dict(embed='addresses', extract='uie', match='pairs')[task]
    rec = run_scenario('ablation', dict(scenario='ablation', model=model, task=task, corpus=corpus, n_requests=4, rounds=1,
                                        variants='jit=trace+padding=longest;dtype=bf16;cache=16+padding=longest',
                                        baseline='padding=longest', telemetry_rate_hz=0), tmp_path / 'res')
    assert rec['status'] == 'ok' and rec['n_measured'] == 3 and rec['errors'] == 0, rec
    v = load_results(tmp_path / 'res').query("outcome != 'summary'").set_index('variant')
    assert len(v) == 3 and (v.outcome == 'ok').all() and (v.task == task).all()
    assert v[fid].notna().all() and v.fid_ok.notna().all()
    traced = v.loc['jit=trace+padding=longest']
    assert traced.fid_ok and traced.speedup > 0             # a traced graph computes what the eager one does
