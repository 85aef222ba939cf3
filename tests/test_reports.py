"""The published reports drawn again from their records equal the committed ones; records of a scenario no section
claims get a generic table, and a section registered for a new scenario shows in the report."""
import shutil

import pytest
from PIL import Image

import fastcore.test as ft
from gte_bench import report
from gte_bench.records import TIMELINE_DIR, make_record, write_record
from conftest import ROOT

PUBLISHED = sorted(p for p in (ROOT / 'reports').iterdir() if (p / 'report' / 'report.md').exists())
LATENCY_PLOTS = {'latency_vs_batch', 'latency_vs_length', 'throughput_vs_batch', 'latency_breakdown', 'length_fit'}


def pngs(folder):
    "PNG file name -> pixel size (width, height)"
    return {p.name: Image.open(p).size for p in sorted(folder.glob('*.png'))}


def test_there_are_published_reports():
    assert len(PUBLISHED) >= 5, PUBLISHED


@pytest.mark.parametrize('src', PUBLISHED, ids=lambda p: p.name)
def test_published_report_is_unchanged(src, tmp_path):
    "Copy the records (not the report) into a folder of the same name, draw the report, compare it with the committed one"
    d = tmp_path / src.name                     # the report's title is the folder's name
    d.mkdir()
    for f in src.glob('*.parquet'): shutil.copy(f, d / f.name)
    if (src / TIMELINE_DIR).is_dir(): shutil.copytree(src / TIMELINE_DIR, d / TIMELINE_DIR)
    paths = report.write_report(d)
    committed = src / 'report'
    ft.test_eq(paths['markdown'].read_text(encoding='utf-8'), (committed / 'report.md').read_text(encoding='utf-8'))
    ft.test_eq(pngs(d / 'report'), pngs(committed))
    ft.test_eq(sorted(p.name for k, p in paths.items() if k != 'markdown'), sorted(pngs(committed)))


def write_runs(d, scenario, **metrics):
    "Two successful runs of `scenario` told apart by `size`, and one failed run"
    env = dict(cpu_model='test cpu', torch='2.x')
    for size in (1, 2):
        config = dict(scenario=scenario, model='m', device='cpu', size=size, batch_size=4)
        write_record(make_record(config, dict(n=20, p50_ms=10.0 * size, p95_ms=12.0 * size, p99_ms=13.0 * size,
                                              items_per_s=400.0 / size, **metrics), env), d)
    write_record(make_record(dict(scenario=scenario, model='m', device='cpu', size=3, batch_size=4), None, env,
                             status='error', error='RuntimeError: size 3 is too big'), d)


def test_unknown_scenario_gets_a_generic_table_and_no_latency_plots(tmp_path):
    d = tmp_path / 'mystery-runs'
    write_runs(d, 'mystery', wobble_ms=0.5)
    paths = report.write_report(d)
    md = paths['markdown'].read_text(encoding='utf-8')
    ft.test_eq(set(paths), {'markdown'})                          # no plot at all: in particular no latency plot
    assert not LATENCY_PLOTS & {p.stem for p in (d / 'report').glob('*.png')}
    assert '## Runs' not in md and '## Growth with input length' not in md
    assert '## Scenario `mystery`' in md
    assert 'All ran with model=m, device=cpu, batch_size=4.' in md
    # the config that varies (size) and the main metrics; not the other measured values (wobble_ms)
    assert '| size | n | p50_ms | p95_ms | p99_ms | items_per_s |' in md and 'wobble_ms' not in md
    assert '| 1 | 20 | 10 | 12 | 13 | 400 |' in md and '| 2 | 20 | 20 | 24 | 26 | 200 |' in md
    assert '2 successful runs, 1 failed' in md and '## Failed runs' in md and 'size 3 is too big' in md


def test_unknown_scenario_beside_latency_runs_stays_out_of_the_latency_plots(tmp_path):
    d = tmp_path / 'mixed'
    write_runs(d, 'mystery')
    base = dict(model='gte-small-zh', device='cpu', dtype='fp32', padding='max_length')   # no scenario: latency runs
    for bs in (1, 4):
        write_record(make_record(dict(base, batch_size=bs, max_length=16), dict(n=10, p50_ms=bs * 1.0, p95_ms=bs * 1.2,
                     p99_ms=bs * 1.3, items_per_s=bs * 100.0, seq_len_mean=16.0)), d)
    paths = report.write_report(d)
    md = paths['markdown'].read_text(encoding='utf-8')
    assert {'latency_vs_batch', 'throughput_vs_batch'} <= set(paths)
    runs = md[md.index('## Runs'):md.index('## Scenario `mystery`')]
    assert runs.count('| gte-small-zh |') == 2 and '| m |' not in runs   # the Runs table holds the latency runs alone
    ft.test_eq(md.count('## Scenario `mystery`'), 1)


def test_a_registered_section_shows_in_the_report(tmp_path):
    d = tmp_path / 'sleeps'
    write_runs(d, 'sleep-demo')
    report.register_section('sleep-demo', [
        report.Prose('Sleeps timed like requests.'),
        report.Figures([report.Plot('sleep_p50', lambda r: r.plot.bar(x='size', y='p50_ms', figsize=(3, 2)).figure)]),
        report.Table(lambda r: r[r.status == 'ok'][['size', 'p50_ms']], 'Sleep p50')], title='Sleep demo')
    try:
        paths = report.write_report(d)
    finally:
        del report.SECTIONS['sleep-demo']
    md = paths['markdown'].read_text(encoding='utf-8')
    heads = [l for l in md.splitlines() if l.startswith('#')]
    ft.test_eq(heads, ['# Benchmark report: sleeps', '## Environment', '## Sleep demo', '### Sleep p50', '## Failed runs'])
    assert 'Sleeps timed like requests.' in md and '![sleep_p50](sleep_p50.png)' in md
    assert (d / 'report' / 'sleep_p50.png').stat().st_size > 0 and '## Scenario `sleep-demo`' not in md
    # once the section is gone, the same records fall back to the generic table
    assert '## Scenario `sleep-demo`' in report.write_report(d)['markdown'].read_text(encoding='utf-8')


def test_drawing_a_report_does_not_import_torch(tmp_path):
    import subprocess, sys
    write_runs(tmp_path, 'mystery')
    base = dict(model='gte-small-zh', device='cpu', dtype='fp32', padding='max_length')
    for bs in (1, 4):
        write_record(make_record(dict(base, batch_size=bs, max_length=16), dict(n=10, p50_ms=bs * 1.0, p95_ms=bs * 1.2,
                     p99_ms=bs * 1.3, items_per_s=bs * 100.0, seq_len_mean=16.0)), tmp_path)
    code = ("import sys; from gte_bench.report import write_report; p = write_report(sys.argv[1]); "
            "assert 'latency_vs_batch' in p; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
