"Max-batch search on the CPU: the child-process trial (real children of the small preset, and injected failures) and the search."
import json, math

import pytest

import fastcore.test as ft
from gte_bench import max_batch as mb
from gte_bench.max_batch import cpu_fits, max_batch_search
from gte_bench.records import read_record, write_record

MODEL = 'bge-small-zh-v1.5'   # the cheapest preset: 4 layers, hidden 512


def test_nothing_fits_below_the_interpreter():
    "A budget smaller than importing torch: batch 1 does not fit, the child is stopped early, the row says why"
    df = max_batch_search(MODEL, 'cpu', lengths=(32,), budget_mb=150, limit=8)
    row = df.iloc[0]
    ft.test_eq((row.max_batch, row.max_tokens, row.fail_batch, row.trials), (0, 0, 1, 1))
    assert math.isnan(row.peak_mb) and row.fail_peak_mb > 150, row
    assert row.note.startswith('even batch 1 does not fit: RSS reached') and 'budget_mb=150' in row.note, row.note
    assert row.seconds < 30, row.seconds                     # stopped when it passed the budget, not after loading
    [(n, ok, peak, reason)] = json.loads(row.trial_log)
    ft.test_eq((n, ok), (1, False))
    assert peak >= 150 and 'stopped' in reason, (peak, reason)   # the log rounds to 0.1 MB: 150.04 reads 150.0


def test_small_search_up_to_the_limit(tmp_path):
    "A realistic budget (1500 MB) and a small limit: every trial fits, the limit is reported as such"
    df = max_batch_search(MODEL, 'cpu', lengths=(64,), budget_mb=1500, limit=8)
    row = df.iloc[0]
    ft.test_eq((row.seq_len, row.max_batch, row.max_tokens, bool(row.hit_limit)), (64, 8, 512, True))
    assert 'raise limit' in row.note
    assert row.activation_mb > 0 and row.peak_mb <= 1500, (row.activation_mb, row.peak_mb)
    # the whole process is measured: interpreter, torch, transformers and 24 M fp32 weights (~95 MB) at least
    assert row.peak_mb - row.activation_mb > 200, row.peak_mb
    trials = json.loads(row.trial_log)
    ft.test_eq([(n, ok) for n, ok, *_ in trials], [(1, True), (2, True), (4, True), (8, True)])
    assert 'child process' in row.measured
    rec = mb.max_batch_records(df)[0]                         # one flat record; no batch failed, so fail_batch is None
    ft.test_eq((rec['scenario'], rec['max_length'], rec['max_batch'], rec['fail_batch'], rec['threads']), ('max_batch', 64, 8, None, 1))
    ft.test_eq(read_record(write_record(rec, tmp_path))['max_tokens'], 512)


def test_peak_above_budget_when_the_child_finishes():
    "With the watchdog idle (one RSS sample), a budget between the loaded model and the forward's peak is judged on ru_maxrss"
    ok, big = cpu_fits(MODEL, 16, 128, budget_mb=8000)
    assert ok and big['activation_mb'] > 40, big                 # 16 x 128 tokens need room beyond the loaded model
    budget = big['load_rss_mb'] + 15
    ok, info = cpu_fits(MODEL, 16, 128, budget_mb=budget, poll_s=600)
    ft.test_eq(ok, False)
    assert info['peak_mb'] > budget and info['load_rss_mb'] < budget, info    # ran to the end, then judged
    assert info['reason'].startswith('peak RSS') and f'budget_mb={budget:.0f}' in info['reason'], info['reason']


def test_child_error_is_not_a_memory_limit():
    "A child that fails for another reason (no such model) raises, with the child's own message on one line"
    with pytest.raises(RuntimeError) as e: cpu_fits('no-such-model', 1, 8, budget_mb=4000)
    msg = str(e.value)
    assert 'not a memory limit' in msg and 'not a preset' in msg, msg
    assert len(msg.splitlines()) == 1, msg                   # the child's exception, not its traceback
    ft.test_fail(lambda: cpu_fits(MODEL, 1, 8, budget_mb=0), contains='positive number of MB')


@pytest.mark.parametrize('script, timeout_s, expect', [
    ('import os, signal; os.kill(os.getpid(), signal.SIGKILL)', 60, ('child killed by SIGKILL', "kernel's OOM killer")),
    ('import time; time.sleep(30)', 1.0, ('no result within timeout_s=1', 'stopped')),
    ("raise MemoryError('cannot allocate 3 GB')", 60, ('child ran out of memory: MemoryError: cannot allocate 3 GB',)),
])
def test_injected_child_failures_count_as_not_fitting(monkeypatch, script, timeout_s, expect):
    "The OOM killer's SIGKILL, a timeout and a MemoryError in the child are 'does not fit', with the reason"
    monkeypatch.setattr(mb, 'CHILD_SCRIPT', script)
    ok, info = cpu_fits(MODEL, 4, 32, budget_mb=4000, timeout_s=timeout_s)
    ft.test_eq(ok, False)
    assert all(e in info['reason'] for e in expect), info['reason']
    assert info['seconds'] < 20, info


def test_search_recovers_from_injected_oom_kills(monkeypatch):
    "A child killed (as by the OOM killer) above batch 11: the search goes on past each kill and finds 11"
    script = ("import json, os, signal, sys; a = json.loads(sys.argv[1]); n = a['batch_size']\n"
              "if n > 11: os.kill(os.getpid(), signal.SIGKILL)\n"
              "print(json.dumps(dict(peak_rss_mb=100 + n, load_rss_mb=100, load_peak_rss_mb=100, shape=[n, a['seq_len'], 8], "
              "start_s=0, forward_s=0)))")
    monkeypatch.setattr(mb, 'CHILD_SCRIPT', script)
    row = max_batch_search(MODEL, 'cpu', lengths=(16,), budget_mb=4000, limit=64).iloc[0]
    ft.test_eq((row.max_batch, row.fail_batch, row.peak_mb, row.activation_mb), (11, 12, 111, 11))
    ft.test_eq([n for n, *_ in json.loads(row.trial_log)], [1, 2, 4, 8, 16, 12, 10, 11])
    assert all('SIGKILL' in r for n, ok, _, r in json.loads(row.trial_log) if not ok)
