"""Checkpoint folders in ModelScope's download layouts, written locally with small seeded weights and read back through
`load_extractor` and `load_matcher`.

The key names follow ModelScope's source: `SiameseUieModel` (models/nlp/bert/siamese_uie.py) builds one 12-layer
`BertModel` with a pooler under `plm`, then moves layers 6-11 to `crossattention.layer.0-5`, and adds `head_clsf` /
`tail_clsf`; `MGeoForSequenceClassification` (models/multi_modal/mgeo/) keeps `MGeo` under `bert` with a
`text_encoder` `BertModel` (layers from `fusion_layer` on carry a `crossattention`), optional multi-modal `gis_encoder`,
`gis2text`, `gis_type`, and a `classifier`. The state dicts here are built from plain transformers modules renamed to
those keys, not from the classes under test, and the references are plain transformers models."""
import json, os, re

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

os.environ.setdefault('HF_HUB_OFFLINE', '1')

from gte_bench.mgeo import MATCH_LABELS, load_matcher
from gte_bench.models import char_vocab
from gte_bench.uie import load_extractor

SMALL = dict(vocab_size=21128, hidden_size=16, num_attention_heads=2, intermediate_size=32, max_position_embeddings=512)
PAIRS = (['杭州市余杭区文一西路969号', '北京市海淀区中关村大街1号', '上海浦东新区世纪大道100号'],
         ['余杭区文一西路969号阿里巴巴西溪园区', '海淀区中关村大街一号', '上海市黄浦区南京东路1号'])


def _seeded(sd:dict, seed:int) -> dict:
    "Every float tensor of `sd` replaced by seeded normal values (LayerNorm ones and zero biases would compare equal by chance)"
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}


def _write(d, sd:dict, config:dict, configuration:dict, weights:str='pytorch_model.bin', **extra):
    "A download-style folder: configuration.json, config.json, the weights, vocab.txt and any `extra` JSON files"
    d.mkdir(parents=True, exist_ok=True)
    (d / 'configuration.json').write_text(json.dumps(configuration))
    (d / 'config.json').write_text(json.dumps(config))
    (d / 'vocab.txt').write_text('\n'.join(char_vocab()) + '\n', encoding='utf-8')
    if weights.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(d / weights), metadata={'format': 'pt'})   # as transformers writes it
    else: torch.save(sd, d / weights)
    for name, obj in extra.items(): (d / f'{name}.json').write_text(json.dumps(obj))
    return d


# --- SiameseUIE -------------------------------------------------------------------------------------------------

UIE_CONFIGURATION = {'framework': 'pytorch', 'task': 'siamese-uie', 'model': {'type': 'bert'},
                     'pipeline': {'type': 'siamese-uie'}}


def _uie_weights(seed:int=0) -> dict:
    "The state dict of ModelScope's SiameseUieModel, key for key, with seeded values"
    bert = BertModel(BertConfig(**SMALL, num_hidden_layers=12), add_pooling_layer=True)
    sd = {}
    for k, v in bert.state_dict().items():
        m = re.match(r'encoder\.layer\.(\d+)\.(.*)', k)
        sd[f'crossattention.layer.{int(m[1]) - 6}.{m[2]}' if m and int(m[1]) >= 6 else 'plm.' + k] = v
    sd |= {'head_clsf.weight': torch.zeros(1, 16), 'head_clsf.bias': torch.zeros(1),
           'tail_clsf.weight': torch.zeros(1, 16), 'tail_clsf.bias': torch.zeros(1)}
    sd = _seeded(sd, seed)
    sd['plm.embeddings.position_ids'] = torch.arange(512)[None]    # persisted by the transformers of its time
    return sd


def _uie_folder(d, sd, model_type:str|None='bert', **kw):
    cfg = BertConfig(**SMALL, num_hidden_layers=12).to_dict()    # 12: the constructor itself splits off the upper 6
    if model_type is None: cfg.pop('model_type')
    return _write(d, sd, cfg, UIE_CONFIGURATION, **kw)


def test_uie_key_layout():
    sd = _uie_weights()
    layers = lambda pre: sorted({int(k.split('.')[len(pre.split('.')) - 1]) for k in sd if k.startswith(pre)})
    assert layers('plm.encoder.layer.') == layers('crossattention.layer.') == list(range(6))
    assert {k.split('.')[0] for k in sd} == {'plm', 'crossattention', 'head_clsf', 'tail_clsf'}
    assert {'plm.pooler.dense.weight', 'plm.embeddings.word_embeddings.weight'} <= set(sd)
    assert sd['head_clsf.weight'].shape == (1, 16) and sd['tail_clsf.bias'].shape == (1,)


def test_uie_modelscope_layout(tmp_path):
    sd = _uie_weights()
    ex = load_extractor(str(_uie_folder(tmp_path / 'uie', sd)))
    assert ex.weights == 'checkpoint' and ex.notes == []
    got = ex.model.state_dict()
    want = {k: v for k, v in sd.items() if not k.endswith('position_ids')}
    assert set(got) == set(want)
    for k, v in want.items(): assert torch.equal(got[k], v), k
    text = '1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资。'
    assert ex.tokenizer('毕业于北大')['input_ids'][1:-1] == [char_vocab().index(c) for c in '毕业于北大']   # vocab.txt read
    paths = ex.extract(text, {'人物': None, '组织机构': {'成立时间': None}})
    assert isinstance(paths, list) and ex.stats['nodes'] >= 1 and ex.stats['hint_passes'] >= 2
    assert all(text[x['offset'][0]:x['offset'][1]] == x['span'] for p in paths for x in p)


def _flat(sd):   # all twelve layers under plm.encoder.layer, as one unsplit BertModel would save them
    return {re.sub(r'^crossattention\.layer\.(\d+)', lambda m: f'plm.encoder.layer.{int(m[1]) + 6}', k): v for k, v in sd.items()}

def _tf_names(sd):   # LayerNorm weight/bias under their TF-era names
    return {re.sub(r'LayerNorm\.weight$', 'LayerNorm.gamma', re.sub(r'LayerNorm\.bias$', 'LayerNorm.beta', k)): v for k, v in sd.items()}


@pytest.mark.parametrize('variant, weights, model_type', [('flat', 'pytorch_model.bin', 'bert'),
                                                          ('tf_names', 'model.safetensors', None),
                                                          ('flat+tf_names', 'pytorch_model.bin', 'structbert')])
def test_uie_layout_variants(tmp_path, variant, weights, model_type):
    sd = _uie_weights(seed=1)
    saved = sd
    if 'flat' in variant: saved = _flat(saved)
    if 'tf_names' in variant: saved = _tf_names(saved)
    ex = load_extractor(str(_uie_folder(tmp_path / variant, saved, model_type, weights=weights)))
    got = ex.model.state_dict()
    for k, v in sd.items():
        if not k.endswith('position_ids'): assert torch.equal(got[k], v), k
    assert torch.equal(got['crossattention.layer.5.output.dense.weight'], saved[next(
        k for k in saved if re.fullmatch(r'(plm\.encoder\.layer\.11|crossattention\.layer\.5)\.output\.dense\.weight', k))])
    assert any('layers 6-11' in n for n in ex.notes) == ('flat' in variant)
    assert ex.extract('谷口清太郎在日本积极筹资。', {'人物': None}) is not None


def test_uie_bad_folders(tmp_path):
    sd = _uie_weights()
    no_head = {k: v for k, v in sd.items() if not k.startswith('head_clsf')}
    with pytest.raises(ValueError, match=r'lacks 2 weights \(head_clsf\.weight, head_clsf\.bias\)'):
        load_extractor(str(_uie_folder(tmp_path / 'no_head', no_head)))
    extra = sd | {'crossattention.layer.6.output.dense.bias': torch.zeros(16)}   # more layers than config.json says
    with pytest.raises(ValueError, match=r'has unknown 1 weights \(crossattention\.layer\.6'):
        load_extractor(str(_uie_folder(tmp_path / 'extra', extra)))
    empty = _uie_folder(tmp_path / 'empty', sd); (empty / 'pytorch_model.bin').unlink()
    with pytest.raises(FileNotFoundError, match='neither model.safetensors nor pytorch_model.bin'):
        load_extractor(str(empty))


# --- MGeo ------------------------------------------------------------------------------------------------------

MGEO_CONFIGURATION = {'framework': 'pytorch', 'task': 'sentence-similarity', 'model': {'type': 'mgeo'},
                      'pipeline': {'type': 'sentence-similarity'}}
PERMUTED = {'partial_match': 0, 'exact_match': 1, 'not_match': 2}


def _mgeo_weights(layers:int=4, fusion:int=4, gis:bool=False, seed:int=0) -> dict:
    "The state dict of ModelScope's MGeoForSequenceClassification, key for key, with seeded values"
    text = BertModel(BertConfig(**SMALL, num_hidden_layers=layers), add_pooling_layer=True)
    sd = {'bert.text_encoder.' + k: v for k, v in text.state_dict().items()}
    for i in range(fusion, layers):   # BertLayer(config, i) has a crossattention when i >= config.fusion_layer
        pre = f'bert.text_encoder.encoder.layer.{i}.crossattention.'
        for lin in ('self.query', 'self.key', 'self.value', 'output.dense'):
            sd |= {f'{pre}{lin}.weight': torch.zeros(16, 16), f'{pre}{lin}.bias': torch.zeros(16)}
        sd |= {f'{pre}output.LayerNorm.weight': torch.zeros(16), f'{pre}output.LayerNorm.bias': torch.zeros(16)}
    if gis:   # finetune_mode='multi-modal'
        g = BertModel(BertConfig(**SMALL, num_hidden_layers=1), add_pooling_layer=False)
        sd |= {'bert.gis_encoder.' + k: v for k, v in g.state_dict().items()}
        sd |= {'bert.gis2text.weight': torch.zeros(16, 16), 'bert.gis2text.bias': torch.zeros(16), 'bert.gis_type.weight': torch.zeros(1, 16)}
    sd |= {'classifier.weight': torch.zeros(3, 16), 'classifier.bias': torch.zeros(3)}
    sd = _seeded(sd, seed)
    sd['bert.text_encoder.embeddings.position_ids'] = torch.arange(512)[None]
    return sd


def _mgeo_config(layers=4, fusion=4, **kw):
    cfg = {k: v for k, v in BertConfig(**SMALL, num_hidden_layers=layers).to_dict().items() if k != 'model_type'}
    return cfg | dict(fusion_layer=fusion, gis_embedding=0) | kw


def _reference(sd:dict, fusion:int, folder, label2id:dict, token_types:bool=True):
    "Probabilities in MATCH_LABELS order from a plain BertForSequenceClassification given the text path's weights"
    keep = {}
    for k, v in sd.items():
        if k.startswith('bert.text_encoder.') and not k.endswith('position_ids'):
            m = re.match(r'bert\.text_encoder\.encoder\.layer\.(\d+)\.', k)
            if not (m and int(m[1]) >= fusion): keep['bert.' + k[len('bert.text_encoder.'):]] = v
        elif k.startswith('classifier.'): keep[k] = v
    ref = BertForSequenceClassification(BertConfig(**SMALL, num_hidden_layers=fusion, num_labels=3)).eval()
    ref.load_state_dict(keep, strict=True)
    enc = BertTokenizerFast.from_pretrained(folder)(*PAIRS, padding=True, return_tensors='pt')
    if not token_types: enc.pop('token_type_ids')
    with torch.inference_mode(): p = torch.softmax(ref(**enc).logits, -1)
    return p[:, [label2id[l] for l in MATCH_LABELS]].numpy(), keep


def test_mgeo_modelscope_layout(tmp_path):
    sd = _mgeo_weights()
    d = _write(tmp_path / 'mgeo', sd, _mgeo_config(), MGEO_CONFIGURATION, label_mapping=PERMUTED)
    mt = load_matcher(str(d))
    assert mt.weights == 'checkpoint' and mt.notes == [] and mt.order == (2, 0, 1)
    want, keep = _reference(sd, 4, d, PERMUTED)
    got = mt.model.state_dict()
    assert set(got) == set(keep)
    for k, v in keep.items(): assert torch.equal(got[k], v), k
    p = mt.scores(*PAIRS)
    torch.testing.assert_close(torch.from_numpy(p), torch.from_numpy(want), rtol=1e-5, atol=1e-6)
    untyped, _ = _reference(sd, 4, d, PERMUTED, token_types=False)
    assert abs(p - untyped).max() > 1e-4                        # token types matter, and the matcher passes them
    r = mt.match(PAIRS[0][0], PAIRS[1][0])[0]
    assert r['label'] == MATCH_LABELS[int(want[0].argmax())] and r['not_match'] == pytest.approx(float(want[0, 0]), abs=1e-6)


def test_mgeo_multimodal_fusion(tmp_path):
    sd = _mgeo_weights(layers=6, fusion=4, gis=True, seed=3)
    assert any('.crossattention.' in k for k in sd) and any(k.startswith('bert.gis_encoder.') for k in sd)
    cfg = _mgeo_config(6, 4, gis_encoder=BertConfig(**SMALL, num_hidden_layers=1).to_dict())
    d = _write(tmp_path / 'mgeo-mm', sd, cfg, MGEO_CONFIGURATION, weights='model.safetensors', label_mapping=PERMUTED)
    mt = load_matcher(str(d))
    assert mt.model.config.num_hidden_layers == 4 and len(mt.model.bert.encoder.layer) == 4
    assert any('bert.gis2text, bert.gis_encoder, bert.gis_type' in n for n in mt.notes)
    assert any('fusion_layer=4' in n and 'layers 4-5 dropped' in n for n in mt.notes)
    assert not any('crossattention' in k or 'gis' in k for k in mt.model.state_dict())
    want, keep = _reference(sd, 4, d, PERMUTED)
    for k, v in keep.items(): assert torch.equal(mt.model.state_dict()[k], v), k
    torch.testing.assert_close(torch.from_numpy(mt.scores(*PAIRS)), torch.from_numpy(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('where', ['configuration.json model.id2label', 'configuration.json model.label2id', 'config.json id2label'])
def test_mgeo_label_sources(tmp_path, where):
    sd, cfg, conf = _mgeo_weights(seed=4), _mgeo_config(), dict(MGEO_CONFIGURATION)
    id2label = {str(i): l for l, i in PERMUTED.items()}
    if where.endswith('model.id2label'): conf['model'] = {**conf['model'], 'id2label': id2label}
    elif where.endswith('model.label2id'): conf['model'] = {**conf['model'], 'label2id': PERMUTED}
    else: cfg |= dict(id2label=id2label, label2id=PERMUTED)
    d = _write(tmp_path / 'mgeo', sd, cfg, conf)
    mt = load_matcher(str(d))
    assert mt.order == (2, 0, 1)
    want, _ = _reference(sd, 4, d, PERMUTED)
    torch.testing.assert_close(torch.from_numpy(mt.scores(*PAIRS)), torch.from_numpy(want), rtol=1e-5, atol=1e-6)


def test_mgeo_bad_folders(tmp_path):
    sd = _mgeo_weights()
    no_clf = {k: v for k, v in sd.items() if not k.startswith('classifier.')}
    d = _write(tmp_path / 'no_clf', no_clf, _mgeo_config(), MGEO_CONFIGURATION, label_mapping=PERMUTED)
    with pytest.raises(ValueError, match=r'lacks 2 weights \(classifier\.weight, classifier\.bias\)'):
        load_matcher(str(d))
    no_pooler = {k: v for k, v in sd.items() if '.pooler.' not in k}   # the classifier reads the pooled output
    with pytest.raises(ValueError, match=r'pooler\.dense\.weight'):
        load_matcher(str(_write(tmp_path / 'no_pooler', no_pooler, _mgeo_config(), MGEO_CONFIGURATION, label_mapping=PERMUTED)))
    d = _write(tmp_path / 'unnamed', sd, _mgeo_config(), MGEO_CONFIGURATION, label_mapping={'0': 0, '1': 1, '2': 2})
    with pytest.raises(ValueError, match=r"labels \['0', '1', '2'\] from .*label_mapping\.json.* are not not_match"):
        load_matcher(str(d))
    d = _write(tmp_path / 'gis_emb', sd, _mgeo_config(gis_embedding=1), MGEO_CONFIGURATION, label_mapping=PERMUTED)
    with pytest.raises(ValueError, match='gis_embedding'):
        load_matcher(str(d))
    d = _write(tmp_path / 'fusion', sd, _mgeo_config(fusion=9), MGEO_CONFIGURATION, label_mapping=PERMUTED)
    with pytest.raises(ValueError, match=r'fusion_layer=9 is outside 1\.\.num_hidden_layers=4'):
        load_matcher(str(d))


# --- GTE embeddings by id: ModelScope's cache, the Hugging Face cache, remote code ------------------------------

GTE_CONFIGURATION = {'framework': 'pytorch', 'task': 'sentence-embedding', 'model': {'type': 'bert'},
                     'pipeline': {'type': 'sentence-embedding'}}


def _gte_folder(d, seed:int=0, prefix:str='bert.', weights:str='pytorch_model.bin', **cfg_extra):
    """A small GTE-style checkpoint. ModelScope's `BertForSentenceEmbedding` keeps its `BertModel` under `bert.`
    (its base_model_prefix); a Hugging Face download has the bare keys (`prefix=''`). Returns the reference model."""
    ref = BertModel(BertConfig(**SMALL, num_hidden_layers=2), add_pooling_layer=False)
    ref.load_state_dict(_seeded(ref.state_dict(), seed)); ref.eval()
    _write(d, {prefix + k: v for k, v in ref.state_dict().items()}, {**ref.config.to_dict(), **cfg_extra},
           GTE_CONFIGURATION, weights=weights)
    return ref


def _cls(ref, tok, texts):
    "What a GTE checkpoint should give: its L2-normalized [CLS] vectors"
    with torch.no_grad(): h = ref(**tok(texts, padding=True, return_tensors='pt')).last_hidden_state[:, 0]
    return torch.nn.functional.normalize(h, dim=-1).numpy()


def test_gte_modelscope_ids_from_its_cache(tmp_path, monkeypatch):
    "An iic/ or damo/ id loads the ModelScope download (both cache layouts), weights under `bert.` included"
    from gte_bench.models import load_embedder, get_preset
    monkeypatch.setenv('MODELSCOPE_CACHE', str(tmp_path))
    d = tmp_path / 'models' / 'iic' / 'nlp_gte_sentence-embedding_chinese-base'    # the newer layout
    ref = _gte_folder(d)
    emb = load_embedder('iic/nlp_gte_sentence-embedding_chinese-base')
    assert (emb.weights, emb.dim, emb.meta['folder'], emb.pooling) == ('checkpoint', 16, str(d), 'cls')
    assert abs(emb.embed(PAIRS[0]) - _cls(ref, emb.tokenizer, PAIRS[0])).max() < 1e-5
    ref2 = _gte_folder(tmp_path / 'damo' / 'nlp_gte_sentence-embedding_chinese-large', seed=1)   # the older one
    emb2 = load_embedder('damo/nlp_gte_sentence-embedding_chinese-large')
    assert abs(emb2.embed(PAIRS[1]) - _cls(ref2, emb2.tokenizer, PAIRS[1])).max() < 1e-5
    # the bare ModelScope name stays the preset (random weights); an id that is not downloaded is no preset
    assert get_preset('gte-base-zh').matches('nlp_gte_sentence-embedding_chinese-base')
    assert not get_preset('gte-large-zh').matches('iic/nlp_gte_sentence-embedding_chinese-large')


def test_uie_and_mgeo_modelscope_ids(tmp_path, monkeypatch):
    "load_extractor and load_matcher find a ModelScope id in its cache, and say where they looked when it is not there"
    monkeypatch.setenv('MODELSCOPE_CACHE', str(tmp_path))
    _uie_folder(tmp_path / 'models' / 'iic' / 'nlp_structbert_siamese-uie_chinese-base', _uie_weights())
    ex = load_extractor('iic/nlp_structbert_siamese-uie_chinese-base')
    assert ex.weights == 'checkpoint' and ex.model.config.hidden_size == 16
    with pytest.raises(ValueError, match=re.escape(f"ModelScope's cache ({tmp_path})")):
        load_matcher('iic/mgeo_geographic_entity_alignment_chinese_base')
    with pytest.raises(ValueError, match='modelscope download --model damo/nlp_structbert_siamese-uie_chinese-base'):
        load_extractor('damo/nlp_structbert_siamese-uie_chinese-base')


HUB_SCRIPT = r'''
import json, sys
from gte_bench.models import load_embedder
texts = json.loads(sys.argv[1])
def outcome(f):
    try: return f()
    except Exception as e: return f'{type(e).__name__}: {e}'
emb = load_embedder('thenlper/gte-small-zh')
print(json.dumps(dict(weights=emb.weights, dim=emb.dim, meta=emb.meta, vecs=emb.embed(texts).tolist(),
                      uncached=outcome(lambda: load_embedder('thenlper/gte-large-zh').weights),
                      remote_refused=outcome(lambda: load_embedder(sys.argv[2]).weights),
                      remote=outcome(lambda: type(load_embedder(sys.argv[2], trust_remote_code=True).model).__name__))))
'''

REMOTE_CONFIG = 'from transformers import BertConfig\nclass TinyConfig(BertConfig):\n    model_type = "tiny-bert"\n'
REMOTE_MODEL = ('from transformers import BertModel\nfrom .configuration_tiny import TinyConfig\n'
                'class TinyModel(BertModel):\n    config_class = TinyConfig\n')


def test_gte_hub_id_and_remote_code(tmp_path):
    """A hub id loads the real checkpoint from the Hugging Face cache (offline here), never the preset; one that is
    not cached fails naming the preset to use instead. Code shipped with a checkpoint runs only when asked for.
    In a fresh interpreter: the hub's offline switch and cache folders are read when it is imported."""
    import subprocess, sys
    from gte_bench.models import char_tokenizer
    repo = tmp_path / 'hub' / 'models--thenlper--gte-small-zh'
    snap = repo / 'snapshots' / ('0' * 40)
    ref = _gte_folder(snap, prefix='', weights='model.safetensors')
    char_tokenizer().save_pretrained(snap)
    (repo / 'refs').mkdir(); (repo / 'refs' / 'main').write_text('0' * 40)
    remote = tmp_path / 'remote'
    _gte_folder(remote, seed=2, prefix='', auto_map={'AutoConfig': 'configuration_tiny.TinyConfig',
                                                      'AutoModel': 'modeling_tiny.TinyModel'}, model_type='tiny-bert')
    char_tokenizer().save_pretrained(remote)
    (remote / 'configuration_tiny.py').write_text(REMOTE_CONFIG); (remote / 'modeling_tiny.py').write_text(REMOTE_MODEL)
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path / 'hub'), 'HF_HOME': str(tmp_path / 'home'),
           'MODELSCOPE_CACHE': str(tmp_path / 'ms')}
    r = subprocess.run([sys.executable, '-c', HUB_SCRIPT, json.dumps(PAIRS[0]), str(remote)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert (out['weights'], out['dim'], out['meta']['source'], out['meta']['trust_remote_code']) == \
           ('checkpoint', 16, 'thenlper/gte-small-zh', False)
    import numpy as np
    assert abs(np.array(out['vecs']) - _cls(ref, char_tokenizer(), PAIRS[0])).max() < 1e-5
    assert out['uncached'].startswith('OSError') and "the preset 'gte-large-zh' builds" in out['uncached'], out['uncached']
    assert 'trust_remote_code' in out['remote_refused'] and out['remote'] == 'TinyModel', (out['remote_refused'], out['remote'])


# --- ids that are not cached: the hub from HF_ENDPOINT, failing fast; ModelScope through its package -------------

ENDPOINT_SCRIPT = r'''
import sys, time
from gte_bench.models import load_embedder
t0 = time.perf_counter()
try: load_embedder('thenlper/gte-large-zh'); print('LOADED')
except OSError as e: print(f'{time.perf_counter() - t0:.2f} {e}')
'''


class _Recorder:
    "A local HTTP server answering 404 to everything, remembering the paths it was asked for"
    def __init__(self):
        import http.server, threading
        paths = self.paths = []
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self): paths.append(self.path); self.send_response(404); self.end_headers()
            do_HEAD = do_GET
            def log_message(self, *a): pass
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True); self.thread.start()
    def close(self): self.server.shutdown(); self.server.server_close()


def _run_hub(tmp_path, endpoint):
    import subprocess, sys
    env = {**os.environ, 'HF_HUB_OFFLINE': '0', 'HF_ENDPOINT': endpoint, 'HF_HUB_CACHE': str(tmp_path / 'hub'),
           'HF_HOME': str(tmp_path / 'home'), 'MODELSCOPE_CACHE': str(tmp_path / 'ms'), 'HF_HUB_ETAG_TIMEOUT': '5'}
    r = subprocess.run([sys.executable, '-c', ENDPOINT_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    seconds, _, msg = r.stdout.strip().splitlines()[-1].partition(' ')
    return float(seconds), msg


def test_hub_id_fails_fast_without_a_network(tmp_path):
    "Outside `make` the hub is on; an endpoint that cannot be reached is an error within seconds, naming it and the preset"
    seconds, msg = _run_hub(tmp_path, 'http://127.0.0.1:9')
    assert seconds < 10 and 'http://127.0.0.1:9 cannot be reached' in msg and "the preset 'gte-large-zh' builds" in msg, (seconds, msg)


def test_hub_id_honours_hf_endpoint(tmp_path):
    "A mirror set in HF_ENDPOINT is where the download goes"
    srv = _Recorder()
    try: seconds, msg = _run_hub(tmp_path, f'http://127.0.0.1:{srv.port}')
    finally: srv.close()
    assert any('thenlper/gte-large-zh' in p for p in srv.paths), srv.paths
    assert f'downloading it from http://127.0.0.1:{srv.port} failed' in msg, msg


def test_modelscope_id_downloads_through_its_package(tmp_path, monkeypatch):
    "With the modelscope package installed and its hub reachable, an id not in ModelScope's cache is downloaded into it"
    from gte_bench.models import load_embedder, small_checkpoint
    pkg = tmp_path / 'pkgs' / 'modelscope'; pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text(
        'from pathlib import Path\nfrom gte_bench.models import small_checkpoint\nCALLS = []\n'
        'def snapshot_download(model_id, cache_dir=None):\n'
        '    CALLS.append((model_id, cache_dir))\n'
        '    return str(small_checkpoint(Path(cache_dir) / "models" / model_id, "embed"))\n')
    monkeypatch.syspath_prepend(str(tmp_path / 'pkgs'))
    monkeypatch.setenv('MODELSCOPE_CACHE', str(tmp_path / 'ms'))
    srv = _Recorder()
    monkeypatch.setenv('MODELSCOPE_DOMAIN', f'127.0.0.1:{srv.port}')
    try: emb = load_embedder('iic/nlp_gte_sentence-embedding_chinese-small')
    finally: srv.close()
    import modelscope
    assert modelscope.CALLS == [('iic/nlp_gte_sentence-embedding_chinese-small', str(tmp_path / 'ms'))]
    assert emb.weights == 'checkpoint' and emb.dim == 32 and emb.meta['folder'].startswith(str(tmp_path / 'ms'))
    assert load_embedder('iic/nlp_gte_sentence-embedding_chinese-small').weights == 'checkpoint'   # now in the cache: no download
    assert len(modelscope.CALLS) == 1
