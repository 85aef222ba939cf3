"""locust for teams that use it: the endpoints and corpora `gte-bench load` drives, from locust's FastHttpUser.

    locust -f bench/locustfile.py --headless -u 16 -r 16 -t 60s --host http://127.0.0.1:8000

Settings come from the environment:
    GTE_API      openai (default) | openai-base64 | tei | similarity | match | extract | raw (a bare POST of {"x": "..."})
    GTE_PATH     the route (default: the API's: /v1/embeddings, /embed, /similarity, /match, /extract; raw: /)
    GTE_CORPUS   a .jsonl file with a "text" field; for match, "a" and "b"; for extract, "text" and "schema"
                 (default: this project's data/addresses_sample.jsonl, pairs_sample.jsonl or uie_sample.jsonl)
    GTE_INPUTS   texts (or pairs) per request (default 1; extract sends one item)
    GTE_MODEL    the "model" field of OpenAI requests (default: gte)

What locust cannot tell you, and `gte-bench load` does:
- Its users are a closed loop: a user waits for each reply before sending again, so a service that stalls receives
  fewer requests while it stalls, and the stall shows as one slow request per user (coordinated omission).
  `gte-bench load --rate` sends on a schedule and counts latency from when each request was due.
- Its percentiles are rounded to two significant figures for response times over 100 ms; `gte-bench load` keeps
  HDR histograms to three, with intervals and the highest percentile the sample count supports.
- It checks a status, not the vectors: a service that returns wrong or misordered vectors under load passes.
  `gte-bench load` checks a sample of every step's replies against reference vectors.
"""
import json, os, random
from pathlib import Path

from locust import FastHttpUser, constant, task

API = os.environ.get('GTE_API', 'openai')
PATHS = {'openai': '/v1/embeddings', 'openai-base64': '/v1/embeddings', 'tei': '/embed', 'similarity': '/similarity',
         'match': '/match', 'extract': '/extract', 'raw': '/'}
if API not in PATHS: raise SystemExit(f"GTE_API={API!r} is not one of {list(PATHS)}")
PATH = os.environ.get('GTE_PATH', PATHS[API])
DEFAULT = {'match': 'pairs_sample.jsonl', 'extract': 'uie_sample.jsonl'}.get(API, 'addresses_sample.jsonl')
CORPUS = Path(os.environ.get('GTE_CORPUS', Path(__file__).resolve().parent.parent / 'data' / DEFAULT))
INPUTS = 1 if API == 'extract' else int(os.environ.get('GTE_INPUTS', '1'))
MODEL = os.environ.get('GTE_MODEL', 'gte')
ROWS = [json.loads(l) for l in CORPUS.read_text(encoding='utf-8').splitlines() if l.strip()]

def body(rng:random.Random) -> bytes:
    "One request body of the configured API, its items drawn from the corpus"
    rows = [rng.choice(ROWS) for _ in range(INPUTS + (API == 'similarity'))]
    t = [r.get('text') for r in rows]
    if API.startswith('openai'):
        d = dict(input=t, model=MODEL, encoding_format='base64' if API == 'openai-base64' else 'float')
    elif API == 'tei': d = dict(inputs=t)
    elif API == 'similarity': d = dict(source=t[0], candidates=t[1:])
    elif API == 'match': d = dict(pairs=[[r['a'], r['b']] for r in rows])
    elif API == 'extract':
        s = rows[0]['schema']; d = dict(text=t[0], schema=json.loads(s) if isinstance(s, str) else s)
    else: d = dict(x=t[0])
    return json.dumps(d, ensure_ascii=False).encode()

BODIES = [body(random.Random(i)) for i in range(512)]           # encoded before the run, as gte-bench load does

class ServiceUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def request(self):
        b = random.choice(BODIES)
        with self.client.post(PATH, data=b, headers={'content-type': 'application/json'}, catch_response=True) as r:
            if r.status_code != 200: r.failure(f'status {r.status_code}')
            elif API.startswith('openai') and len(r.json().get('data', [])) != INPUTS: r.failure('wrong number of vectors')
            elif API == 'match' and len(r.json().get('data', [])) != INPUTS: r.failure('wrong number of results')
