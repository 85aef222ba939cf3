"The task benchmark notebook through papermill: SiameseUIE extraction and MGeo matching records, and its sweep files."
import json

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from gte_bench.mgeo import MGEO_PRESET
from gte_bench.models import char_tokenizer
from gte_bench.records import load_results, record_path
from gte_bench.run import bench_notebook, notebook_defaults
from gte_bench.sweep import KERNEL_KW, expand_grid, kernel_env, load_sweep
from gte_bench.uie import UIE_PRESET
from conftest import ROOT

NB = bench_notebook('task_latency')


def _run(tmp_path, **params):
    "Execute the notebook with `params` into tmp_path/records; returns (records DataFrame, full config)"
    out_dir = tmp_path / 'records'
    kernel_env()
    pm.execute_notebook(str(NB), str(tmp_path / 'run.ipynb'), parameters={**params, 'out_dir': str(out_dir)},
                        kernel_name='python3', progress_bar=False, cwd=str(NB.parent), **KERNEL_KW)
    config = {k: v for k, v in {**notebook_defaults(NB), **params}.items() if k != 'out_dir'}
    return load_results(out_dir), config, out_dir


def _passes(schema, answers):
    "(nodes, hint passes) of an oracle-steered extraction, counted from the schema and the gold tree alone"
    nodes = hints = 0
    def walk(node, gold):
        nonlocal nodes, hints
        nodes += 1; hints += len(node)
        for k, v in node.items():
            if v is not None:
                for g in gold:
                    if g['type'] == k: walk(v, g['children'])
    walk(schema, answers)
    return nodes, hints


def test_extract_record(tmp_path):
    # the two shortest NER items and the shortest relation item of the committed set, each timed once
    df = pd.read_json(ROOT / 'data' / 'uie_sample.jsonl', lines=True, dtype=False)
    df = df.assign(n=df.text.str.len()).sort_values('n')
    sub = pd.concat([df[df.task == 'ner'].head(2), df[df.task == 'relation'].head(1)]).drop(columns='n')
    corpus = tmp_path / 'uie3.jsonl'
    sub.to_json(corpus, orient='records', lines=True, force_ascii=False)
    recs, config, out_dir = _run(tmp_path, task='extract', corpus=str(corpus), warmup=1, min_iters=3, max_iters=3,
                                 duration_s=0.0, telemetry_rate_hz=50)
    assert len(recs) == 1 and (out_dir / record_path(out_dir, config).name).exists()
    rec = recs.iloc[0]
    assert rec.status == 'ok' and rec.task == 'extract' and rec.batch_size == 1 and rec.errors == 0
    assert rec.model == '' and rec.model_resolved == UIE_PRESET.name and rec.weights == 'random'
    assert rec.decode == 'oracle' and rec.attn_used == 'sdpa' and rec.items_per_request == 1
    assert rec.n == 3 >= config['min_iters']
    assert rec.items_per_s > 0 and rec.items_per_s == pytest.approx(1e3 / rec.mean_ms, rel=1e-6)
    want = np.array([_passes(json.loads(s), json.loads(a)) for s, a in zip(sub.schema, sub.answers)])
    assert rec.nodes_per_request == pytest.approx(want[:, 0].mean())          # 1, 1 and 1 + persons found
    assert rec.text_passes_per_request == pytest.approx(want[:, 0].mean())    # short texts: one window per node
    assert rec.hint_passes_per_request == pytest.approx(want[:, 1].mean())
    assert rec.hint_passes_per_request > 3                                    # the relation item recursed
    tok = char_tokenizer(UIE_PRESET.vocab, UIE_PRESET.max_pos)
    assert rec.tokens_per_request == pytest.approx(np.mean([len(tok(t)['input_ids']) for t in sub.text]))
    assert rec.chars_per_request == pytest.approx(sub.text.str.len().mean())
    assert 0 < rec.min_ms <= rec.p50_ms <= rec.max_ms and rec.peak_mem_mb > 0 and rec.load_s > 0
    timeline = pd.read_parquet(out_dir / 'timelines' / f'{rec.config_hash}.parquet')
    assert {'warmup', 'measure'} <= set(timeline.phase.dropna())


def test_match_record(tmp_path):
    recs, config, out_dir = _run(tmp_path, task='match', batch_size=4, warmup=1, min_iters=3, duration_s=0.2)
    assert len(recs) == 1
    rec = recs.iloc[0]
    assert rec.status == 'ok' and rec.task == 'match' and rec.errors == 0
    assert rec.model_resolved == MGEO_PRESET.name and rec.corpus_resolved == 'pairs' and rec.weights == 'random'
    assert rec.n >= config['min_iters'] and rec.items_per_request == 4 and rec.max_length == 128
    assert rec.items_per_s > 0 and rec.items_per_s == pytest.approx(4e3 / rec.mean_ms, rel=1e-6)   # pairs/s
    assert 4 * 3 < rec.tokens_per_request <= rec.padded_tokens_per_request <= 4 * 128
    assert rec.padded_tokens_per_request == pytest.approx(4 * rec.seq_len_mean)
    assert rec.telemetry_phase == 'measure' or rec.telemetry_phase.startswith('all')


def test_match_fidelity_against_fp32_eager(tmp_path):
    # default sdpa attention already differs from the reference (eager); bf16 moves the probabilities further
    recs, _, _ = _run(tmp_path, task='match', batch_size=2, dtype='bf16', fidelity_items=6, warmup=0, min_iters=1, duration_s=0)
    rec = recs.iloc[0]
    assert rec.fid_reference == 'fp32 eager' and rec.fid_items == 6
    assert 0 <= rec.fid_label_agree <= 1 and 0 < rec.fid_max_abs_prob_diff < 0.5


def test_reference_run_has_no_fidelity(tmp_path):
    recs, _, _ = _run(tmp_path, task='match', batch_size=2, attn_implementation='eager', warmup=0, min_iters=1, duration_s=0)
    rec = recs.iloc[0]
    assert rec.fid_reference == 'this run is the reference' and 'fid_label_agree' not in recs


def test_cuda_needs_a_device(tmp_path):
    "On a machine without CUDA the point fails with the reason, recorded as its error"
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA')
    with pytest.raises(pm.PapermillExecutionError, match='sees no CUDA device'):
        _run(tmp_path, task='match', quant='int8-dynamic', device='cuda')
    rec = load_results(tmp_path / 'records').iloc[0]
    assert rec.status == 'error' and 'sees no CUDA device' in rec.error


def test_extract_rejects_batches(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match='batch_size must be 1, got 8'):
        _run(tmp_path, task='extract', batch_size=8)
    recs = load_results(tmp_path / 'records')          # failed before anything was measured: an error record says why
    assert len(recs) == 1 and recs.status[0] == 'error' and 'batch_size must be 1, got 8' in recs.error[0]
    assert recs.n.isna().all()


@pytest.mark.parametrize('name,task,sizes', [('extract', 'extract', [1]), ('match', 'match', [1, 8, 32])])
def test_sweep_files(name, task, sizes):
    spec = load_sweep(ROOT / 'sweeps' / f'{name}.yaml')
    assert spec['notebook'] == 'task_latency'
    pts = expand_grid(spec, notebook_defaults(bench_notebook(spec['notebook'])))
    assert sorted(p['batch_size'] for p in pts) == sizes and {p['task'] for p in pts} == {task}
    assert all(p['device'] == 'cpu' and p['model'] for p in pts)
