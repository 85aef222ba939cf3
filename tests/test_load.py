"The load benchmark end to end: bench/load.ipynb through the sweep runner, its records and the report's load section."
import os
from pathlib import Path

import pandas as pd
import yaml

from gte_bench.records import TIMELINE_DIR, load_results
from gte_bench.report import load_table, write_report
from gte_bench.sweep import run_sweep


def test_load_benchmark_records(tmp_path):
    "A short CPU point: side-by-side single-stream and offline runs, two capacity searches, one summary"
    spec = tmp_path / 'load.yaml'
    spec.write_text(yaml.safe_dump(dict(notebook='load', fixed=dict(
        model='bge-small-zh-v1.5', device='cpu', batch_size=4, slo_ms=80.0, slo_percentile=90, min_duration_s=0.3,
        rounds=1, capacity_searches=2),
        grid=dict(corpus=['addresses']))))
    out = tmp_path / 'records'
    counts = run_sweep(spec, out, tmp_path / 'runs', progress=False)
    assert counts['ok'] == 1 and counts['error'] == 0, counts
    df = load_results(out)
    assert (df.status == 'ok').all()
    if want := os.environ.get('GTE_BENCH_EXPECT_TRANSFORMERS'):      # the compatibility run: the kernel saw the overlay
        assert (df.env_transformers == want).all(), df.env_transformers.unique()
    modes = df['mode'].value_counts(dropna=False)
    assert {'loop-single', 'lg-single', 'loop-batch', 'lg-offline', 'lg-server'} <= set(modes.index.dropna())
    summary = df[df.outcome.eq('summary')].iloc[0]
    probes = df[df['mode'].eq('lg-server')]
    assert set(probes.search) == {0, 1}
    passed = probes[probes.lg_valid.astype(bool)]
    per_search = passed.groupby('search').lg_target_qps.max()          # each search's capacity
    # the capacity is the lower of the two searches' (the lower median, a rate that was measured), the range is both
    assert abs(summary.max_qps / per_search.min() - 1) < 1e-3 and abs(summary.max_qps_max / per_search.max() - 1) < 1e-3
    assert summary.max_qps_min == summary.max_qps and summary.capacity_searches == 2
    # in the median search, the first failing rate lies above the capacity
    med = probes[probes.search == summary.median_search]
    assert (~med.lg_valid.astype(bool)).any() and summary.first_failing_qps > summary.max_qps
    # the second search began at 0.7 times the first one's capacity, under the next seed
    second = probes[probes.search == 1].sort_values('probe')
    assert abs(second.lg_target_qps.iloc[0] / (0.7 * per_search[0]) - 1) < 1e-3 and (second.lg_seed == 1).all()
    assert (passed.lg_p90_ms <= 80.0).all() and summary.p95_ms == summary.p95_ms      # a number, not NaN
    assert summary.queries_at_max >= 64 and summary.overlatency_at_max < 0.1 * summary.queries_at_max   # a P90 claim
    # LoadGen's single stream holds at least what a p90 claim needs, and the worker ran one text at a time
    single = df[df['mode'].eq('lg-single')].iloc[0]
    assert single.lg_query_count >= 64 and single.batch_mean == 1.0 and single.lg_validity == 'VALID'
    assert df[df['mode'].eq('lg-offline')].iloc[0].batch_mean > 1
    # one telemetry timeline for the point; each measurement's record summarises its own phase of it
    tl = pd.read_parquet(next((out / TIMELINE_DIR).glob('*.parquet')))
    assert {'loop-single-0', 'lg-single-0', 'lg-offline-0'} <= set(tl.phase)
    _, search, qps = zip(*probes.telemetry_phase.str.split('-'))      # server-<search>-<requested rate>
    assert list(map(int, search)) == probes.search.astype(int).tolist()
    assert all(abs(float(q) / r - 1) < 1e-3 for q, r in zip(qps, probes.lg_target_qps))   # LoadGen logs 2 decimals
    assert (df[df['mode'].notna()].telemetry_samples >= 1).all()
    t = load_table(df)
    assert len(t) == 1 and t.max_qps[0] == summary.max_qps and t.max_qps_max[0] == summary.max_qps_max
    paths = write_report(out)
    assert 'load' in paths and '## Load scenarios' in paths['markdown'].read_text()
