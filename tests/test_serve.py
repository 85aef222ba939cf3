"""gte-bench serve as a real service: started in a child process on a free loopback port, driven by real HTTP clients
(httpx, aiohttp, the openai SDK), stopped by its PID."""
import asyncio, base64, json, signal, threading, time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gte_bench.models import load_model, small_checkpoint
from gte_bench.serve import Limits, Service

TEXTS = ['浙江省杭州市西湖区文三路478号', '你好', '北京市海淀区中关村大街27号', '上海市浦东新区世纪大道100号环球金融中心',
         '广东省深圳市南山区科技园', '我想退货，物流太慢了', '这家店的服务很好', '四川省成都市武侯区人民南路四段']


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp('serve')
    return {t: small_checkpoint(root / t, t) for t in ('embed', 'match', 'extract')}


@pytest.fixture(scope='module')
def svc(ckpt):
    "The embedding service with dynamic batching and a 20 ms wait, so that concurrent requests share batches"
    with Service(model=str(ckpt['embed']), limits=Limits(max_wait_ms=20, max_inputs=16)) as s: yield s


def metrics(url):
    return {f.name: f for f in text_string_to_metric_families(httpx.get(url + '/metrics').text)}


def sample(fams, name, sample_name):
    return sum(s.value for s in fams[name].samples if s.name == sample_name)


def solo(url, text):
    r = httpx.post(url + '/v1/embeddings', json=dict(input=text))
    assert r.status_code == 200, r.text
    return np.array(r.json()['data'][0]['embedding'])


def test_embeddings_match_the_model_in_process(svc, ckpt):
    r = httpx.post(svc.url + '/v1/embeddings', json=dict(input=TEXTS[:3], model='whatever'))
    assert r.status_code == 200
    got = np.array([d['embedding'] for d in r.json()['data']])
    np.testing.assert_allclose(got, load_model(str(ckpt['embed']))(TEXTS[:3], max_length=512), atol=1e-5)
    heads = r.headers
    assert {'x-total-time', 'x-tokenization-time', 'x-queue-time', 'x-inference-time', 'x-compute-tokens'} <= set(heads)
    assert int(heads['x-compute-tokens']) == r.json()['usage']['prompt_tokens'] == sum(len(t) + 2 for t in TEXTS[:3])
    assert int(heads['x-total-time']) >= int(heads['x-inference-time'])
    # the same vectors at infinity's route and as TEI's /embed
    np.testing.assert_allclose(httpx.post(svc.url + '/embeddings', json=dict(input=TEXTS[:3])).json()['data'][2]['embedding'], got[2], atol=1e-6)
    np.testing.assert_allclose(httpx.post(svc.url + '/embed', json=dict(inputs=TEXTS[:3])).json()[1], got[1], atol=1e-6)
    sim = httpx.post(svc.url + '/similarity', json=dict(source_sentence=[TEXTS[0]], sentences_to_compare=TEXTS[:3])).json()
    np.testing.assert_allclose(sim['scores'], got @ got[0], atol=1e-5)
    models = httpx.get(svc.url + '/v1/models').json()
    assert models['data'][0]['id'] == str(ckpt['embed'])


def check_concurrent_rows(svc, n=120):
    "Send `n` requests at once; every row must equal the vector of its text sent alone, in the order of `index`. The batch counts"
    alone = {t: solo(svc.url, t) for t in TEXTS}
    before = metrics(svc.url)
    rng = np.random.default_rng(0)
    reqs = [list(rng.choice(TEXTS, size=int(rng.integers(1, 4)))) for _ in range(n)]

    async def go():
        import aiohttp
        async with aiohttp.ClientSession() as s:
            async def one(texts):
                async with s.post(svc.url + '/v1/embeddings', json=dict(input=texts)) as r:
                    return r.status, await r.json()
            return await asyncio.gather(*(one(t) for t in reqs))
    answers = asyncio.run(asyncio.wait_for(go(), 120))
    for texts, (status, body) in zip(reqs, answers):
        assert status == 200, body
        assert [d['index'] for d in body['data']] == list(range(len(texts)))
        for t, d in zip(texts, body['data']):
            np.testing.assert_allclose(d['embedding'], alone[t], atol=1e-5)
    after = metrics(svc.url)
    batches = sample(after, 'te_batch_next_size', 'te_batch_next_size_count') - sample(before, 'te_batch_next_size', 'te_batch_next_size_count')
    requests = sample(after, 'te_batch_next_size', 'te_batch_next_size_sum') - sample(before, 'te_batch_next_size', 'te_batch_next_size_sum')
    assert requests == len(reqs)
    return batches


def test_concurrent_rows_are_each_texts_own(svc):
    "Under concurrent load every row equals the vector of its text sent alone, in the order of `index`"
    batches = check_concurrent_rows(svc)
    assert batches < 120 / 2, f"120 concurrent requests ran in {batches} batches: they were not batched together"


def test_two_workers_keep_each_row_its_texts_own(ckpt):
    "Two inference threads computing batches at once, each on its share of the CPU's threads: every row is still its text's own"
    with Service(model=str(ckpt['embed']), limits=Limits(max_wait_ms=5, max_inputs=16, workers=2)) as s:
        h = httpx.get(s.url + '/health').json()
        assert h['workers'] == 2 and 'threads=' in h['toggles'], h
        check_concurrent_rows(s, 200)


def test_metrics_parse_with_prometheus_parser(svc):
    httpx.post(svc.url + '/v1/embeddings', json=dict(input='你好'))
    httpx.post(svc.url + '/v1/embeddings', content=b'{"input": ')
    fams = metrics(svc.url)
    for name in ('te_request_duration', 'te_request_tokenization_duration', 'te_request_queue_duration',
                 'te_request_inference_duration', 'te_batch_next_size', 'te_batch_next_tokens', 'te_queue_size',
                 'te_request_count', 'te_request_success', 'te_request_failure', 'gte_bench_responses'):
        assert name in fams, name
    statuses = {s.labels['status']: s.value for s in fams['gte_bench_responses'].samples if s.name == 'gte_bench_responses_total'}
    assert statuses.get('200', 0) >= 1 and statuses.get('400', 0) >= 1
    assert sample(fams, 'te_request_failure', 'te_request_failure_total') >= 1


BAD = [
    (b'', 'no body'), (b'{"input": ', 'not valid JSON'), (b'[1, 2]', 'expected an object'), (b'{}', "'input' is missing"),
    (b'{"input": ""}', 'empty'), (b'{"input": []}', 'empty array'), (b'{"input": "   "}', 'empty'),
    (b'{"input": 5}', 'expected a string'), (b'{"input": ["a", null]}', 'input[1]'), (b'{"input": [[101, 102]]}', 'token ids'),
    (b'{"input": "\\ud800x"}', 'surrogate'), (b'{"input": "\\u0000\\u0001"}', 'no token'), (b'\xff\xfe\xfd', 'not valid JSON'),
    (b'{"input": "a", "encoding_format": "int8"}', 'encoding_format'), (b'{"input": "a", "dimensions": 3}', 'dimensions'),
    (json.dumps({'input': '好' * 20000}).encode(), 'more than 512 tokens'), (json.dumps({'input': ['a'] * 17}).encode(), 'at most 16'),
]


@pytest.mark.parametrize('body,says', BAD, ids=[s for _, s in BAD])
def test_bad_input_gets_a_4xx_that_says_what(svc, body, says):
    r = httpx.post(svc.url + '/v1/embeddings', content=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    err = r.json()['error']
    assert says in err['message'], err
    assert set(err) == {'message', 'type', 'param', 'code'}


def test_wrong_route_method_and_family(svc):
    assert httpx.get(svc.url + '/v1/embeddings').status_code == 405
    assert 'error' in httpx.get(svc.url + '/nowhere').json()
    r = httpx.post(svc.url + '/match', json=dict(pairs=[['a', 'b']]))
    assert r.status_code == 404 and '--task match' in r.json()['error']['message']


def test_body_over_the_limit_is_413(ckpt):
    with Service(model=str(ckpt['embed']), limits=Limits(max_body_bytes=1000)) as s:
        r = httpx.post(s.url + '/v1/embeddings', content=json.dumps({'input': '好' * 2000}).encode())
        assert r.status_code == 413 and '1,000' in r.json()['error']['message']


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                           lambda v: st.lists(v, max_size=4) | st.dictionaries(st.text(max_size=8), v, max_size=4), max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({'input': json_values}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({'input': st.lists(st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF,
                                                                            blacklist_categories=()), max_size=20), max_size=5)}).map(
        lambda v: json.dumps(v).encode()),
    st.text(max_size=60).map(lambda t: ('{"input": "%s"}' % t).encode('utf-8', 'surrogatepass')),
)
ROUTES = ['/v1/embeddings', '/embed', '/similarity', '/embeddings', '/match', '/extract']


def test_thousands_of_generated_bad_inputs_never_5xx(svc):
    seen, client = [], httpx.Client(timeout=30)

    @settings(max_examples=1000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(ROUTES), body=bodies)
    def send(route, body):
        r = client.post(svc.url + route, content=body, headers={'content-type': 'application/json'})
        seen.append(r.status_code)
        assert r.status_code < 500, (route, body[:200], r.status_code, r.text[:300])
        assert 'error' in r.json() if r.status_code >= 400 else True
    send()
    assert len(seen) >= 1000
    assert httpx.get(svc.url + '/health').json()['status'] == 'ok'
    assert any(400 <= s < 500 for s in seen) and svc.proc.poll() is None


def test_openai_sdk_float_and_base64_with_an_api_key(ckpt):
    import openai
    with Service(model=str(ckpt['embed']), api_key='sesame', limits=Limits(truncate=True)) as s:
        assert httpx.post(s.url + '/v1/embeddings', json=dict(input='你好')).status_code == 401
        assert httpx.get(s.url + '/health').status_code == 200          # probes need no key
        client = openai.OpenAI(base_url=s.url + '/v1', api_key='sesame', max_retries=0)
        f = client.embeddings.create(model='m', input=TEXTS[:3], encoding_format='float')
        b = client.embeddings.create(model='m', input=TEXTS[:3])        # the SDK asks for base64 and decodes it
        raw = httpx.post(s.url + '/v1/embeddings', json=dict(input=TEXTS[:3], encoding_format='base64'),
                         headers={'authorization': 'Bearer sesame'}).json()
        assert [d.index for d in f.data] == [0, 1, 2] and f.usage.prompt_tokens == sum(len(t) + 2 for t in TEXTS[:3])
        np.testing.assert_allclose([d.embedding for d in b.data], [d.embedding for d in f.data], atol=1e-6)
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(raw['data'][1]['embedding']), '<f4'),
                                      np.asarray(b.data[1].embedding, np.float32))
        long = client.embeddings.create(model='m', input='好' * 20000, encoding_format='float')     # --truncate: cut, not refused
        assert long.usage.prompt_tokens == 512
        with pytest.raises(openai.BadRequestError, match='empty'):
            client.embeddings.create(model='m', input=[''])


def test_overload_at_twice_capacity_gets_fast_429s_and_bounded_memory(ckpt):
    cap = 16
    with Service(model=str(ckpt['embed']), limits=Limits(max_concurrent=cap, max_wait_ms=0)) as s:
        body = json.dumps(dict(input=[t * 8 for t in TEXTS] * 2)).encode()
        proc, rss = psutil.Process(s.pid), []

        async def burst(client):
            async def one():
                t0 = time.perf_counter()
                async with client.post(s.url + '/v1/embeddings', data=body, headers={'content-type': 'application/json'}) as r:
                    await r.read(); return r.status, time.perf_counter() - t0, r.headers.get('retry-after')
            return await asyncio.gather(*(one() for _ in range(2 * cap)))

        async def go():
            import aiohttp
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as c:
                out = []
                for _ in range(6):
                    out += await burst(c); rss.append(proc.memory_info().rss)
                return out
        res = asyncio.run(asyncio.wait_for(go(), 300))
        codes = [c for c, _, _ in res]
        assert not [c for c in codes if c >= 500], codes
        assert codes.count(429) > 0 and codes.count(200) >= cap
        assert all(ra == '1' for c, _, ra in res if c == 429)
        t429 = np.median([t for c, t, _ in res if c == 429]); t200 = np.median([t for c, t, _ in res if c == 200])
        assert t429 < t200 / 2, f"429s took {t429 * 1e3:.1f} ms (median), answers {t200 * 1e3:.1f} ms: refusals must come at once"
        growth = (rss[-1] - rss[1]) / 2**20
        assert growth < 64, f"resident memory grew {growth:.0f} MB over four more overload bursts: {[r >> 20 for r in rss]} MB"
        assert httpx.get(s.url + '/health').json()['inflight'] == 0


@pytest.mark.parametrize('workers', [1, 2])
def test_sigterm_drains_the_queue(ckpt, workers):
    "SIGTERM while requests wait in the queue: every one is answered, the process exits 0 (its inference threads all ended), nothing new is taken"
    s = Service(model=str(ckpt['embed']), limits=Limits(max_wait_ms=3000, max_batch_requests=256, wait_always=True, workers=workers)).start()
    try:
        with ThreadPoolExecutor(24) as pool:
            futs = [pool.submit(httpx.post, s.url + '/v1/embeddings', json=dict(input=TEXTS[i % 8]), timeout=60) for i in range(24)]
            t_end = time.monotonic() + 30
            while httpx.get(s.url + '/health').json()['queue_requests'] < 24 and time.monotonic() < t_end: time.sleep(0.05)
            assert httpx.get(s.url + '/health').json()['queue_requests'] == 24
            s.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futs]
        assert [r.status_code for r in answers] == [200] * 24
        assert s.proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError): httpx.post(s.url + '/v1/embeddings', json=dict(input='你好'))
    finally: s.stop()


def test_match_and_extract_services(ckpt):
    with Service(model=str(ckpt['match']), task='match') as s:
        r = httpx.post(s.url + '/match', json=dict(pairs=[['杭州市西湖区文三路', '西湖区文三路'], {'a': '北京市', 'b': '上海市'}]))
        assert r.status_code == 200, r.text
        d = r.json()['data']
        assert [x['index'] for x in d] == [0, 1] and all(abs(sum(x['probabilities'].values()) - 1) < 1e-5 for x in d)
        assert all(x['label'] == max(x['probabilities'], key=x['probabilities'].get) for x in d)
        for bad, says in (([['杭州市', 5]], 'address b'), ([['只有一个']], 'neither'), ([], 'empty'), ('杭州', 'expected')):
            e = httpx.post(s.url + '/match', json=dict(pairs=bad))
            assert e.status_code == 400 and says in e.json()['error']['message'], (bad, e.text)
        assert httpx.post(s.url + '/v1/embeddings', json=dict(input='a')).status_code == 404
    with Service(model=str(ckpt['extract']), task='extract') as s:
        r = httpx.post(s.url + '/extract', json=dict(text='张伟在杭州阿里巴巴工作', schema={'人物': None, '组织机构': None}))
        assert r.status_code == 200 and isinstance(r.json()['output'], list), r.text
        assert r.json()['weights'] == 'checkpoint'
        for schema in (['人物'], '{"人物"', 5, {}):
            e = httpx.post(s.url + '/extract', json=dict(text='张伟', schema=schema))
            assert e.status_code == 400 and 'schema' in e.json()['error']['message'], (schema, e.text)
        assert httpx.get(s.url + '/health').json()['status'] == 'ok'


def test_a_model_that_does_not_load_ends_the_service(tmp_path):
    (tmp_path / 'config.json').write_text('{"model_type": "bert"}')
    with pytest.raises(RuntimeError, match='exited with code 1'):
        Service(model=str(tmp_path), start_timeout_s=120).start()


def test_a_service_does_not_outlive_the_process_that_started_it(ckpt):
    import subprocess, sys
    code = ("import time; from gte_bench.serve import Service; "
            f"s = Service(model={str(ckpt['embed'])!r}).start(); print(s.pid, s.url, flush=True); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        pid, url = parent.stdout.readline().split()
        assert httpx.get(url + '/health').status_code == 200
    finally:
        parent.kill(); parent.wait()
    psutil.Process(int(pid)).wait(30)           # psutil.TimeoutExpired if the orphan went on serving


def test_a_request_past_its_timeout_gets_503_and_is_not_computed(ckpt):
    with Service(model=str(ckpt['embed']), limits=Limits(timeout_s=1, max_wait_ms=4000, max_batch_requests=8, wait_always=True)) as s:
        t0 = time.perf_counter()
        r = httpx.post(s.url + '/v1/embeddings', json=dict(input='你好'), timeout=30)
        waited = time.perf_counter() - t0
        assert r.status_code == 503 and 'no answer within 1 s' in r.json()['error']['message'] and r.headers['retry-after'] == '1'
        assert waited < 4, f"the timeout answered after {waited:.1f} s, not at 1 s"
        time.sleep(3.5)                                  # the batch's wait ends; the given-up request is skipped, not run
        fams = metrics(s.url)
        assert sample(fams, 'te_batch_next_size', 'te_batch_next_size_count') == 0
        assert httpx.get(s.url + '/health').json()['status'] == 'ok'


def test_toggles_apply_to_the_served_model(ckpt):
    "ONNX Runtime with int8 weights behind the service: its vectors are the toggled model's, near the plain ones"
    from gte_bench.optim import Runner
    plain = load_model(str(ckpt['embed']))(TEXTS[:4], max_length=512)
    with Service(model=str(ckpt['embed']), toggles='backend=onnxruntime') as s:
        h = httpx.get(s.url + '/health').json()
        got = np.array([d['embedding'] for d in httpx.post(s.url + '/v1/embeddings', json=dict(input=TEXTS[:4])).json()['data']])
    assert 'backend=onnxruntime' in h['toggles']
    np.testing.assert_allclose(got, plain, atol=1e-4)
    with Service(model=str(ckpt['embed']), toggles='quant=int8-dynamic', batching='none') as s:
        assert httpx.get(s.url + '/health').json()['batching'] == 'none'
        q = np.array([d['embedding'] for d in httpx.post(s.url + '/v1/embeddings', json=dict(input=TEXTS[:4])).json()['data']])
    ref = Runner(str(ckpt['embed']), 'quant=int8-dynamic+padding=bucket+batch_size=32+max_length=512')(TEXTS[:4])
    np.testing.assert_allclose(q, ref, atol=1e-4)
    assert np.abs(q - plain).max() > 1e-4                 # int8 did change the model


def test_the_serving_benchmark_notebook_under_papermill(tmp_path):
    "bench/serve.ipynb with a smaller preset and two workers: one record per server and step, the point's record with the ratio"
    import papermill as pm
    from gte_bench.records import load_results
    from gte_bench.run import bench_notebook
    from gte_bench.sweep import KERNEL_KW, kernel_env
    kernel_env()
    out_dir = tmp_path / 'records'
    pm.execute_notebook(str(bench_notebook('serve')), str(tmp_path / 'run.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(model='gte-small-zh', concurrency='1,8', workers=2, duration_s=1.0, warmup_s=0.3, out_dir=str(out_dir)),
                        **KERNEL_KW)
    df = load_results(out_dir)
    steps = df[df['server'].notna()]
    assert sorted(zip(steps.server, steps.clients)) == [('dynamic', 1), ('dynamic', 8), ('none', 1), ('none', 8)]
    assert (steps.error_rate == 0).all() and (steps.throughput_rps > 0).all() and (steps.server_cpu_cores > 0).all()
    assert (steps.fid_checked > 0).all() and (steps.fid_violations == 0).all()       # replies checked against the checkpoint
    point = df[df['server'].isna()].iloc[0]
    assert point['dynamic_vs_none_max_clients'] > 0 and point['scenario'] == 'gte_bench.loadtest:serve_compare'
    assert 'flags' in steps and 'other_cpu_cores' in steps      # each step says what else used the machine
