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


# --- numbers a newcomer can trust: fit labels, readable axes, visible lines, corpus, flags and repeats ---------------

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gte_bench.records import load_results

LENGTHS = np.array([16, 32, 64, 128, 256, 512])


def latency_run(d, batch_size, max_length, p50, p95=None, corpus='texts', model='gte-small-zh', repeat=None, **metrics):
    "A latency record as the run context writes it (a sweep with repeats adds `repeat` to the config)"
    config = dict(scenario='latency', model=model, task='embed', device='cpu', dtype='fp32', padding='max_length',
                  corpus=corpus, batch_size=batch_size, max_length=max_length)
    if repeat is not None: config['repeat'] = repeat
    p95 = p95 or 1.1 * p50
    write_record(make_record(config, dict(n=20, p50_ms=p50, p95_ms=p95, p99_ms=1.05 * p95, items_per_s=1e3 * batch_size / p50,
                                          seq_len_mean=float(max_length), **metrics), dict(cpu_model='test cpu')), d)


def contrast_on_white(colour):
    "WCAG 2 contrast ratio of a colour on white"
    from matplotlib.colors import to_rgb
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 1.05 / (0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] + 0.05)


def drawn_lines(fig):
    "The lines with data on a figure's axes (seaborn adds empty ones for its legend)"
    return [l for ax in fig.axes for l in ax.get_lines() if len(l.get_xdata())]


def plain_labels_in_range(ax, which):
    "Plain-number labels of the major ticks inside the data's range on log axis `which` of `ax`"
    lo, hi = ax.dataLim.intervaly if which == 'y' else ax.dataLim.intervalx
    labels = ax.get_yticklabels() if which == 'y' else ax.get_xticklabels()
    at = lambda t: t.get_position()[1 if which == 'y' else 0]
    return [t.get_text() for t in labels if lo <= at(t) <= hi and re.fullmatch(r'[0-9][0-9,]*(\.[0-9]+)?', t.get_text())]


def test_each_fit_label_shows_the_r2_of_the_model_it_names(tmp_path):
    "A linear verdict shows the linear R², a quadratic the quadratic's; a parabola bending down is no linear growth"
    d = tmp_path / 'lengths'
    curves = {1: 5 + 0.1 * LENGTHS, 4: 5 + 0.1 * LENGTHS + 0.001 * LENGTHS**2,
              8: np.array([206.6, 322.3, 569.2, 1530.9, 2272.7, 5108.8]),     # linear R² 0.992, quadratic R² 0.993
              16: 2000 - (LENGTHS - 264)**2 / 40}                               # quadratic R² 1, linear R² near 0
    for bs, ys in curves.items():
        for ml, y in zip(LENGTHS, ys): latency_run(d, bs, int(ml), float(y))
    recs = load_results(d)
    fits = report.length_fits(recs).set_index('batch_size')
    ft.test_eq(dict(fits.growth), {1: 'linear', 4: 'quadratic', 8: 'linear', 16: 'inconclusive'})
    assert fits.loc[16, 'r2_quadratic'] > 0.999 and fits.loc[16, 'r2_linear'] < 0.5 and np.isnan(fits.loc[16, 'knee_tokens'])
    fig = report.plot_length_fit(report.shaped_runs(recs), report.length_fits(recs))
    labels = {int(re.match(r'batch (\d+):', t.get_text()).group(1)): t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    for bs, f in fits.iterrows():
        if f.growth == 'linear': assert labels[bs] == f'batch {bs}: linear (R² {f.r2_linear:.3f})', labels[bs]
        elif f.growth == 'quadratic': assert labels[bs].endswith(f'(R² {f.r2_quadratic:.3f})') and 'knee 100 tok' in labels[bs]
        else: assert labels[bs] == f'batch {bs}: inconclusive (R² linear {f.r2_linear:.2f}, quadratic {f.r2_quadratic:.2f})'
    assert 'R² 0.992' in labels[8]                                   # not the quadratic's 0.993
    colour = {bs: l.get_color() for bs, l in zip(fits.index, fig.axes[0].get_legend().get_lines())}
    same = lambda a, b: np.allclose(plt.matplotlib.colors.to_rgb(a), plt.matplotlib.colors.to_rgb(b))
    ft.test_eq(sum(same(l.get_color(), colour[16]) for l in drawn_lines(fig)), 1)   # its points, no curve, no knee
    ft.test_eq(sum(same(l.get_color(), colour[1]) for l in drawn_lines(fig)), 2)    # points and the fitted line
    plt.close(fig)
    md = report.write_report(d)['markdown'].read_text(encoding='utf-8')
    assert 'Neither model explains the latency of gte-small-zh · cpu · fp32 at batch 16: not quadratic, as it bends down' in md
    assert 'Quadratic growth: gte-small-zh · cpu · fp32 at batch 4 (knee 100 tokens).' in md
    assert 'Linear growth: gte-small-zh · cpu · fp32 at batch 1 and 8.' in md


def test_every_log_axis_has_plain_tick_labels_whatever_the_span(tmp_path):
    "Latencies within one decade (and the published load probes) get at least two plain-number labels on each log axis"
    d = tmp_path / 'narrow'
    for bs in (1, 2, 4):
        for ml in (16, 32, 64, 128): latency_run(d, bs, ml, 40 + 3 * bs + ml / 8)     # 43 to 60 ms: within a decade
    shaped = report.shaped_runs(load_results(d))
    load = load_results(ROOT / 'reports' / 'cpu-2core-amd-epyc-load')
    figs = [report.plot_latency_vs_batch(shaped), report.plot_latency_vs_length(shaped), report.plot_throughput(shaped),
            report.plot_load(load)]
    checked = 0
    for fig in figs:
        for ax in fig.axes:
            for which in ('x', 'y'):
                if (ax.get_xscale() if which == 'x' else ax.get_yscale()) != 'log': continue
                lo, hi = ax.dataLim.intervaly if which == 'y' else ax.dataLim.intervalx
                if lo == hi: continue
                assert len(plain_labels_in_range(ax, which)) >= 2, (fig.texts and fig.texts[0].get_text(), which, plain_labels_in_range(ax, which))
                checked += 1
        plt.close(fig)
    assert checked >= 7, checked                 # the latency axes of two plots, the batch axes of two, both axes of two load panels


def test_every_line_stands_out_on_white(tmp_path):
    "Every batch size and every length gets a line of at least 3:1 contrast on the white page (batch 1 was pale peach)"
    d = tmp_path / 'many'
    for bs in (1, 2, 4, 8, 16, 32, 64):
        for ml in (16, 32, 64, 128, 256, 512): latency_run(d, bs, ml, 5 + 0.1 * bs * ml)
    recs = load_results(d)
    shaped = report.shaped_runs(recs)
    figs = [report.plot_latency_vs_length(shaped), report.plot_latency_vs_batch(shaped), report.plot_throughput(shaped),
            report.plot_length_fit(shaped, report.length_fits(recs)), report.plot_load(load_results(ROOT / 'reports' / 'cpu-2core-amd-epyc-load'))]
    for fig in figs:
        least = min(contrast_on_white(l.get_color()) for l in drawn_lines(fig))
        assert least >= 3.0, (fig.texts and fig.texts[0].get_text(), least)
        plt.close(fig)


def test_runs_on_two_corpora_are_told_apart(tmp_path):
    d = tmp_path / 'corpora'
    for corpus, p50 in (('texts', 30.0), ('addresses', 12.0)):
        for bs in (1, 4): latency_run(d, bs, 64, p50 * bs, corpus=corpus)
    t = report.summary_table(load_results(d))
    ft.test_eq(list(t.columns[:5]), ['task', 'model', 'corpus', 'device', 'dtype'])
    ft.test_eq(sorted(zip(t.corpus, t.batch_size)), [('addresses', 1), ('addresses', 4), ('texts', 1), ('texts', 4)])
    fig = report.plot_latency_vs_batch(report.shaped_runs(load_results(d)))      # a panel per corpus, never averaged together
    ft.test_eq(sorted(ax.get_title() for ax in fig.axes), ['setup = gte-small-zh · addresses · cpu · fp32', 'setup = gte-small-zh · texts · cpu · fp32'])
    plt.close(fig)
    md = report.write_report(d)['markdown'].read_text(encoding='utf-8')
    assert '| embed | gte-small-zh | addresses | cpu | fp32 | 1 | 64 |' in md and '| embed | gte-small-zh | texts | cpu | fp32 | 1 | 64 |' in md


def test_flagged_runs_are_marked_counted_and_left_out_of_plots_and_fits(tmp_path):
    d = tmp_path / 'shared'
    busy = 'other processes kept 1.62 CPU cores busy on average (flagged from 0.5)'
    for ml in LENGTHS:
        contended = ml == 128
        latency_run(d, 1, int(ml), 900.0 if contended else 5 + 0.1 * ml, flags='contended' if contended else '',
                    flag_reason=busy if contended else None, other_cpu_cores=1.62 if contended else 0.05)
    recs = load_results(d)
    ft.test_eq(len(report.shaped_runs(recs)), 5)
    fig = report.plot_latency_vs_length(report.shaped_runs(recs))
    assert all(900.0 not in l.get_ydata() for l in drawn_lines(fig)); plt.close(fig)
    fit = report.length_fits(recs).iloc[0]
    ft.test_eq((fit.n_lengths, fit.growth), (5, 'linear'))               # the fit never saw the contended run
    md = report.write_report(d)['markdown'].read_text(encoding='utf-8')
    assert ('1 of 6 runs was flagged contended (other processes used 1.6 CPU cores on average during their timed phase). '
            'It is left out of the plots and the growth fits; the table keeps it, marked in `flags`.') in md
    runs = md[md.index('## Runs'):md.index('## Growth')]
    assert runs.splitlines()[4].endswith('| flags |') and runs.count('| contended |') == 1 and '| 900 |' in runs
    # the same records, clean, say so; records from before flags say they were not checked
    for f in d.glob('*.parquet'): pd.read_parquet(f).assign(flags='', flag_reason=None).to_parquet(f, index=False)
    assert 'No run was flagged contended or noisy.' in report.write_report(d)['markdown'].read_text(encoding='utf-8')
    for f in d.glob('*.parquet'): pd.read_parquet(f).drop(columns=['flags', 'flag_reason']).to_parquet(f, index=False)
    md = report.write_report(d)['markdown'].read_text(encoding='utf-8')
    assert 'The records carry no `flags`' in md and '| flags |' not in md
    # a scenario without a section shows its flagged runs too
    write_runs(tmp_path / 'mystery', 'mystery', flags='contended', flag_reason=busy)
    md = report.write_report(tmp_path / 'mystery')['markdown'].read_text(encoding='utf-8')
    assert '| size | n | p50_ms | p95_ms | p99_ms | items_per_s | flags | flag_reason |' in md and busy in md


def test_repeats_make_one_row_per_point_with_median_range_and_noise_flags(tmp_path):
    d = tmp_path / 'repeats'
    busy = 'other processes kept 1.62 CPU cores busy on average (flagged from 0.5)'
    for r, (p50, fl) in enumerate([(20.0, ''), (21.0, ''), (35.0, 'contended'), (20.4, '')]):    # one repeat contended
        latency_run(d, 1, 64, p50, repeat=r, flags=fl, flag_reason=busy if fl else None, other_cpu_cores=1.62 if fl else 0.1)
    for r, p50 in enumerate([40.0, 58.0, 41.0, 40.5]): latency_run(d, 4, 64, p50, repeat=r, flags='', other_cpu_cores=0.1)   # 1.45x apart
    for r, p50 in enumerate([60.0, 61.0, 66.0, 62.0]):                   # every repeat contended: all kept, and flagged
        latency_run(d, 8, 64, p50, repeat=r, flags='contended', flag_reason=busy, other_cpu_cores=1.62)
    for r, (p50, p95) in enumerate([(10.0, 11.0), (10.2, 30.0), (10.1, 11.2), (10.3, 11.5)]):   # one repeat's tail far out
        latency_run(d, 2, 64, p50, p95, repeat=r, flags='', other_cpu_cores=0.1)
    recs = load_results(d)
    t = report.summary_table(recs).set_index('batch_size')
    ft.test_eq(len(t), 4)
    ft.test_eq(tuple(t.loc[1, ['p50_ms', 'p50_ms_min', 'p50_ms_max', 'repeats', 'repeats_left_out', 'flags']]), (20.4, 20.0, 21.0, 3, 1, ''))
    ft.test_eq(tuple(t.loc[8, ['p50_ms', 'repeats', 'repeats_left_out', 'flags']]), (61.5, 4, 0, 'contended'))
    ft.test_eq(t.loc[4, 'flags'], 'noisy'); ft.test_eq(t.loc[2, 'flags'], 'noisy')
    pts = report.points(recs).set_index('batch_size')
    ft.test_eq(pts.loc[4, 'flag_reason'], 'p50 ranges 1.45× across 4 repeats, over 1.25×')
    assert pts.loc[2, 'flag_reason'].startswith("repeat 1's p95/p50 is 2.94")
    ft.test_eq(sorted(report.shaped_runs(recs).batch_size), [1])         # the plots draw the one clean point
    md = report.write_report(d)['markdown'].read_text(encoding='utf-8')
    assert md.splitlines()[2].startswith('16 successful runs (4 points, each run 4 times), 0 failed.')
    assert "Each point ran 4 times (`repeat`): a row is the median over a point's repeats of each metric" in md
    assert '1 repeat flagged contended was left out of the median of its point' in md
    assert '3 of 4 points were flagged: 1 contended (other processes used 1.6 CPU cores on average' in md
    assert '; 2 noisy (' in md and 'p50 ranges 1.45× across 4 repeats, over 1.25×' in md and "repeat 1's p95/p50 is 2.94, 2.7× the others' 1.11" in md
    runs = md[md.index('## Runs'):]
    head = runs.splitlines()[4]
    for c in ('repeats', 'repeats_left_out', 'p50_ms_min', 'p50_ms_max', 'p95_ms_min', 'p95_ms_max', 'flags'): assert f'| {c} |' in head, c
    assert 'repeat |' not in head
