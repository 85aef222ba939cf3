"The command line: env, report, max-batch, readme, and one line for any error."
import json

from gte_bench.records import load_results, make_record, write_record
from conftest import ROOT, gte_bench


def test_env_prints_json():
    r = gte_bench('env')
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env['torch'] and env['transformers'] and env['cpu_count_logical'] >= 1
    assert env['nvml'] == 'ok' or env['gpu_count'] == 0


def test_report_on_empty_folder_is_a_clear_error(tmp_path):
    r = gte_bench('report', tmp_path)
    assert r.returncode == 2 and 'no records under' in r.stderr


def test_report_writes_plots(tmp_path):
    base = dict(model='gte-small-zh', device='cpu', dtype='fp32', padding='max_length', weights='random')
    for bs in (1, 4):
        for ml in (16, 64):
            m = dict(n=10, p50_ms=bs * ml * 0.1, p90_ms=bs * ml * 0.12, p95_ms=bs * ml * 0.13, p99_ms=bs * ml * 0.15,
                     mean_ms=bs * ml * 0.11, items_per_s=bs / (bs * ml * 1.1e-4), seq_len_mean=float(ml))
            write_record(make_record({**base, 'batch_size': bs, 'max_length': ml}, m, dict(cpu_model='test cpu')), tmp_path)
    write_record(make_record({**base, 'batch_size': 512, 'max_length': 512}, status='error', error='MemoryError: boom'), tmp_path)
    r = gte_bench('report', tmp_path)
    assert r.returncode == 0, r.stderr
    rep = tmp_path / 'report'
    for f in ('latency_vs_batch.png', 'latency_vs_length.png', 'throughput_vs_batch.png', 'report.md', 'report.ipynb'):
        assert (rep / f).stat().st_size > 0, f
    md = (rep / 'report.md').read_text()
    assert '4 successful runs, 1 failed' in md and 'MemoryError: boom' in md and 'cpu_model=test cpu' in md


def test_readme_is_current():
    r = gte_bench('readme', '--check', cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_max_batch_search_from_the_command_line(tmp_path):
    "A CPU max-batch search: every batch up to the limit fits a generous budget, and the records say so"
    out = tmp_path / 'mb'
    r = gte_bench('max-batch', 'bge-small-zh-v1.5', '--budget-mb', 50000, '--lengths', 16, '--limit', 4, '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'peak RSS' in r.stdout and 'the largest batch may be higher' in r.stdout
    df = load_results(out)
    assert len(df) == 1 and df.scenario[0] == 'max_batch' and df.max_batch[0] == 4 and df.hit_limit[0]
    assert df.max_length[0] == 16 and 0 < df.peak_mem_mb[0] < 50000 and df.env_torch[0]


def test_max_batch_errors_are_clear(tmp_path):
    "Every error a user can make is one line on stderr, exit 2: no traceback, the child's included"
    for args, want in [(('bge-small-zh-v1.5', '--lengths', 16), 'needs budget_mb'),
                       (('bge-small-zh-v1.5', '--budget-mb', 9000, '--lengths', '16,x'), "--lengths must be comma-separated whole numbers, got '16,x'"),
                       (('bge-small-zh-v1.5', '--budget-mb', 9000, '--lengths', 100000), 'sequence length 100000'),
                       (('nosuch', '--budget-mb', 3000, '--lengths', 16), "model 'nosuch' is not a preset")]:
        r = gte_bench('max-batch', *args)
        assert r.returncode == 2 and want in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith('gte-bench max-batch: ') and 'Traceback' not in r.stderr, r.stderr


def test_old_command_name_says_the_new_one():
    r = gte_bench('capacity', 'bge-small-zh-v1.5')
    assert r.returncode == 2 and "no command 'capacity'; it is now 'max-batch'" in r.stderr, r.stderr
