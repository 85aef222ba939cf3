"The papermill round trip of the benchmark notebook: injection, the record it writes, and nbdev-clean keeping the tag."
import shutil, subprocess, sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from gte_bench.records import METRIC_COLUMNS, read_record, record_path
from gte_bench.run import bench_notebook, notebook_defaults
from gte_bench.sweep import KERNEL_KW, kernel_env
from conftest import ROOT

BENCH = sorted((ROOT / 'bench').glob('*.ipynb'))


def _tags(cell): return cell.get('metadata', {}).get('tags', [])


@pytest.mark.parametrize('nb', BENCH, ids=lambda p: p.name)
def test_bench_notebooks_have_one_parameters_cell(nb):
    cells = nbformat.read(str(nb), as_version=4).cells
    assert sum('parameters' in _tags(c) for c in cells) == 1
    assert notebook_defaults(nb)   # literal defaults only


def test_nbdev_clean_keeps_parameters_tag(tmp_path):
    nb = tmp_path / 'b.ipynb'
    shutil.copy(bench_notebook('embed_latency'), nb)
    raw = nbformat.read(str(nb), as_version=4)
    raw.cells[1].metadata['collapsed'] = True          # something nbdev-clean must strip
    raw.cells[1].execution_count = 7
    nbformat.write(raw, str(nb))
    subprocess.run([str(Path(sys.executable).parent / 'nbdev-clean'), '--fname', str(nb)], check=True, cwd=ROOT)
    cells = nbformat.read(str(nb), as_version=4).cells
    assert [i for i, c in enumerate(cells) if 'parameters' in _tags(c)] == [1]
    assert 'collapsed' not in cells[1].metadata and cells[1].execution_count is None


def test_papermill_round_trip(tmp_path):
    nb = bench_notebook('embed_latency')
    params = dict(model='gte-small-zh', batch_size=2, max_length=16, warmup=1, min_iters=4, duration_s=0.3,
                  telemetry_rate_hz=50)
    out_nb, out_dir = tmp_path / 'run.ipynb', tmp_path / 'records'
    kernel_env()
    pm.execute_notebook(str(nb), str(out_nb), parameters={**params, 'out_dir': str(out_dir)},
                        kernel_name='python3', progress_bar=False, **KERNEL_KW)

    cells = nbformat.read(str(out_nb), as_version=4).cells
    i = next(i for i, c in enumerate(cells) if 'parameters' in _tags(c))
    assert 'injected-parameters' in _tags(cells[i + 1])
    assert 'batch_size = 2' in cells[i + 1].source and 'max_length = 16' in cells[i + 1].source

    defaults = notebook_defaults(nb)
    config = {k: v for k, v in {**defaults, **params}.items() if k != 'out_dir'}
    files = list(out_dir.glob('*.parquet'))
    assert files == [record_path(out_dir, config)], 'the record is named by the hash of the full config'
    rec = read_record(files[0])
    assert set(METRIC_COLUMNS) <= set(rec)
    assert {'run_id', 'config_hash', 'status', 'error', 'model', 'task', 'scenario', 'batch_size', 'max_length',
            'dtype', 'device', 'padding', 'env_torch', 'env_cpu_model', 'env_git_rev', 'env_timestamp_utc',
            'p95_ci_lo_ms', 'p95_ci_hi_ms', 'max_claimable_pct', 'tokenize_p50_ms', 'forward_p50_ms',
            'postprocess_p50_ms'} <= set(rec)
    assert rec['status'] == 'ok' and rec['weights'] == 'random'
    assert (rec['model'], rec['batch_size'], rec['max_length']) == ('gte-small-zh', 2, 16)
    assert rec['n'] >= 4 and rec['errors'] == 0
    assert 0 < rec['min_ms'] <= rec['p50_ms'] <= rec['p90_ms'] <= rec['p95_ms'] <= rec['p99_ms'] <= rec['max_ms']
    assert rec['seq_len_mean'] == 16.0        # padded to max_length
    assert rec['items_per_s'] == pytest.approx(2e3 / rec['mean_ms'], rel=1e-6)
    assert rec['peak_mem_mb'] > 0 and rec['load_s'] > 0
    assert rec['p95_ci_lo_ms'] <= rec['p95_ms'] <= rec['p95_ci_hi_ms']
    assert rec['n'] < 11 or rec['max_claimable_pct'] >= 50          # NaN below 11 samples: no claim at all
    assert (rec['max_claimable_pct'] != rec['max_claimable_pct']) == (rec['n'] < 11)
    assert 0 < rec['tokenize_p50_ms'] < rec['forward_p50_ms']
    # telemetry: without an NVIDIA device the sampler falls back to the process and says so
    assert rec['telemetry_source'].startswith('cpu-fallback') and rec['mem_source'] == 'process RSS'
    assert rec['telemetry_phase'] == 'measure' and rec['telemetry_samples'] >= 5 and rec['rss_peak_mb'] > 0
    timeline = pd.read_parquet(out_dir / 'timelines' / files[0].name)
    assert {'warmup', 'measure', 'breakdown'} <= set(timeline.phase.dropna()) and (timeline.rss_mb > 0).all()
    # a fraction of a second is no soak: the leak check says so and why
    assert rec['leak_verdict'] == 'too short' and 'need 60 s' in rec['leak_reason'] and rec['leak_mem_col'] == 'rss_mb'


def test_soak_gets_a_leak_verdict(tmp_path):
    "A timed phase longer than soak_min_s gets a verdict on the memory samples of that phase alone"
    out_dir = tmp_path / 'records'
    kernel_env()
    pm.execute_notebook(str(bench_notebook('embed_latency')), str(tmp_path / 'run.ipynb'), kernel_name='python3',
                        progress_bar=False, parameters=dict(model='gte-small-zh', batch_size=2, max_length=16, warmup=1,
                        min_iters=4, duration_s=4.0, breakdown_iters=2, telemetry_rate_hz=20, soak_min_s=2.0,
                        soak_warmup_s=0.5, out_dir=str(out_dir)), **KERNEL_KW)
    rec = read_record(next(out_dir.glob('*.parquet')))
    assert rec['leak_verdict'] in ('stable', 'leak') and rec['leak_mem_col'] == 'rss_mb', rec['leak_reason']
    assert 2.0 <= rec['leak_duration_s'] <= 3.9          # the timed phase after its first 0.5 s, not warmup or breakdown
    assert rec['leak_slope_mb_per_min'] == rec['leak_slope_mb_per_min'] and 'MB/min' in rec['leak_reason']
