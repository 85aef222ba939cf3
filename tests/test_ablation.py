"""The ablation benchmark end to end: a sweep point runs the notebook, every variant is recorded (measured, skipped
with its reason, or failed), the point's summary lets a rerun skip it, and the report shows the comparison."""
import yaml

from gte_bench.records import load_results
from conftest import gte_bench


def test_ablation_sweep_records_every_variant(tmp_path):
    spec = dict(notebook='ablation',
                fixed=dict(model='bge-small-zh-v1.5', corpus='addresses', n_requests=6, rounds=2, zipf_s=1.0,
                           variants='padding=longest;padding=longest+cache=64;attn=flash_attention_2;batch_size=0'),
                grid=dict(max_length=[64]))
    sweep = tmp_path / 'abl.yaml'; sweep.write_text(yaml.safe_dump(spec))
    out = tmp_path / 'res'
    r = gte_bench('sweep', sweep, '--out', out, '--runs', tmp_path / 'runs')
    # batch_size=0 is not a valid toggle: the notebook refuses the variant list before measuring anything
    assert r.returncode == 1, r.stdout + r.stderr
    df = load_results(out)
    assert len(df) == 1 and df.status[0] == 'error' and 'batch_size=0' in df.error[0]

    spec['fixed']['variants'] = 'padding=longest;padding=longest+cache=64;attn=flash_attention_2'
    sweep.write_text(yaml.safe_dump(spec))
    r = gte_bench('sweep', sweep, '--out', out, '--runs', tmp_path / 'runs')
    assert r.returncode == 0, r.stdout + r.stderr
    df = load_results(out)
    df = df[df.variants == spec['fixed']['variants']]
    summary = df[df.outcome == 'summary'].iloc[0]
    v = df[df.outcome != 'summary'].set_index('variant')
    assert set(v.index) == {'padding=longest+max_length=64', 'padding=longest+max_length=64+cache=64',
                            'attn=flash_attention_2+max_length=64'}
    skipped = v.loc['attn=flash_attention_2+max_length=64']
    assert skipped.outcome == 'skipped' and 'CUDA' in skipped.skipped
    measured = v[v.outcome == 'ok']
    assert len(measured) == 2 and (measured.speedup > 0).all() and (measured.n == 12).all()
    assert (measured.opt_max_length == 64).all() and measured.fid_ok.all()
    assert summary.n_measured == 2 and summary.n_skipped == 1 and summary.best_within_tolerance in measured.index
    assert 0 <= measured.loc['padding=longest+max_length=64+cache=64', 'cache_hit_rate'] <= summary.repeat_share + 1e-9

    r = gte_bench('sweep', sweep, '--out', out, '--runs', tmp_path / 'runs')     # recorded: nothing to run
    assert r.returncode == 0 and '1 already recorded, 0 to run' in r.stdout + r.stderr

    r = gte_bench('report', out)
    assert r.returncode == 0, r.stderr
    md = (out / 'report' / 'report.md').read_text()
    assert '## Optimization ablation' in md and 'flash_attention_2 needs a CUDA device' in md
    assert (out / 'report' / 'ablation.png').stat().st_size > 0
