"""A newcomer's first hour. `make lab`: JupyterLab is installed by the bootstrap, starts the way the Makefile starts it
(tools/lab) on the loopback with a token, serves the repo root with this interpreter's kernel, and a kernel's
tqdm.auto bars are widgets (no "IProgress not found" warning). In that kernel, the README's extraction and matching
examples say their random-weight outputs are noise, once, and print nothing else (no transformers log lines)."""
import http.client, json, os, re, shutil, signal, subprocess, sys, time, tomllib
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / 'tools' / 'lab'


def test_bootstrap_installs_lab():
    "The `lab` extra has JupyterLab and ipywidgets, `dev` (what `make install` installs) pulls it in, and both import"
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
    names = lambda reqs: {re.split(r'[<>=!~\[ ;]', r, maxsplit=1)[0].lower() for r in reqs}
    assert {'jupyterlab', 'ipywidgets'} <= names(extras['lab'])
    assert any(r.startswith('gte_bench[') and 'lab' in re.search(r'\[(.*)\]', r)[1].split(',') for r in extras['dev'])
    import ipywidgets, jupyterlab  # noqa: F401  (installed in this venv by `make install`)


@pytest.mark.skipif(not shutil.which('make'), reason='no make on this machine')
def test_make_lab_runs_tools_lab():
    "`make lab` runs tools/lab with .venv's Python and passes LAB_PORT on"
    out = subprocess.run(['make', '-n', '-o', '.venv/.installed', 'lab', 'LAB_PORT=18888'], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LAB_PORT='18888' .venv/bin/python tools/lab" in out.stdout, out.stdout


def get(port, path, token=None, method='GET'):
    "Status and body of one request to the server, redirects not followed"
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        c.request(method, path, headers={'Authorization': f'token {token}'} if token else {})
        r = c.getresponse()
        return r.status, r.read()
    finally: c.close()


def kernel_processes(server:psutil.Process) -> list:
    "The kernel processes the server started"
    out = []
    for p in server.children(recursive=True):
        try:
            if 'ipykernel_launcher' in ' '.join(p.cmdline()): out.append(p)
        except psutil.Error: pass                  # ended, or a zombie not yet reaped, between listing and reading
    return out


def test_lab_serves_with_token(tmp_path):
    "tools/lab, as `make lab` runs it (MPLBACKEND=Agg exported): the printed URL works, the API wants the token, the "
    "repo root is served, a kernel is this interpreter without Agg; stopped by its PID"
    out, err = tmp_path / 'stdout', tmp_path / 'stderr'
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    env.pop('LAB_PORT', None); env.pop('LAB_TOKEN', None)
    with open(out, 'w') as o, open(err, 'w') as e:
        proc = subprocess.Popen([sys.executable, str(LAB)], cwd=tmp_path, stdout=o, stderr=e, env=env, start_new_session=True)
    kernels = []
    try:
        deadline, url = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f'tools/lab exited with {proc.returncode}:\n{out.read_text()}\n{err.read_text()[-3000:]}'
            if url is None and (m := re.search(r'http://127\.0\.0\.1:(\d+)/lab\?token=(\w+)', out.read_text())):
                url, port, token = m[0], int(m[1]), m[2]
            if url:
                try:
                    if get(port, '/api/status', token)[0] == 200: break
                except OSError: pass
            time.sleep(0.5)
        else: pytest.fail(f'JupyterLab did not answer within 120 s:\n{out.read_text()}\n{err.read_text()[-3000:]}')

        assert len(token) >= 32
        assert get(port, '/api/status')[0] == 403                       # no token, no API
        assert get(port, '/api/status', 'not-the-token')[0] == 403
        assert get(port, '/lab')[0] == 302                               # the page sends a visitor without the token to log in
        assert get(port, url.split(str(port), 1)[1])[0] == 200           # the printed URL opens JupyterLab
        status, body = get(port, '/api/contents', token)                 # served from the repo root
        assert status == 200 and {'pyproject.toml', 'nbs', 'Makefile'} <= {x['name'] for x in json.loads(body)['content']}

        server = psutil.Process(proc.pid)                                # tools/lab became the server: same PID
        cmd = server.cmdline()
        assert 'jupyterlab' in cmd and '--no-browser' in cmd and '--ServerApp.ip=127.0.0.1' in cmd
        assert ('--allow-root' in cmd) == (os.geteuid() == 0)
        listening = [c for c in getattr(server, 'net_connections', server.connections)('tcp') if c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == '127.0.0.1' for c in listening)   # the loopback only

        status, body = get(port, '/api/kernels', token, method='POST')  # the default kernel
        assert status == 201, body
        kid = json.loads(body)['id']
        for _ in range(60):
            if kernels := kernel_processes(server): break
            time.sleep(0.5)
        assert len(kernels) == 1
        assert kernels[0].cmdline()[0] == sys.executable                 # .venv's Python when `make lab` runs it
        assert kernels[0].environ().get('MPLBACKEND') != 'Agg'           # inline figures in the notebooks
        assert get(port, f'/api/kernels/{kid}', token, method='DELETE')[0] == 204
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)                             # by PID
            try: proc.wait(30)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait(10)
        for k in kernels:                                                # a kernel left behind, by its PID
            try: k.kill()
            except psutil.NoSuchProcess: pass


TQDM_CHECK = r'''
import json, sys, warnings
def bar(block_ipywidgets):
    for m in [m for m in sys.modules if m == 'tqdm' or m.startswith(('tqdm.', 'ipywidgets'))]: del sys.modules[m]
    if block_ipywidgets: sys.modules['ipywidgets'] = None
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            from tqdm.auto import tqdm
            t = tqdm(range(3)); list(t); t.close()
        return dict(widget=any(c.__module__ == 'tqdm.notebook' for c in type(t).__mro__), warnings=[str(x.message) for x in w])
    finally:
        if block_ipywidgets: del sys.modules['ipywidgets']
print('RESULT', json.dumps(dict(without=bar(True), installed=bar(False))))
'''


def in_kernel(code:str, timeout:int=300) -> tuple[dict, str]:
    "Run `code` in a fresh kernel of this interpreter (the one `make lab` gives): the JSON it printed after RESULT, "
    "and all it wrote to stderr"
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name='python3', cwd=str(ROOT))
    try:
        out, err = [], []
        def hook(msg):
            if msg['msg_type'] == 'stream': (err if msg['content']['name'] == 'stderr' else out).append(msg['content']['text'])
            elif msg['msg_type'] == 'error': err.append('\n'.join(msg['content']['traceback']))
        reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        out, err = ''.join(out), ''.join(err)
        assert reply['content']['status'] == 'ok', out + err
        return json.loads(out.split('RESULT', 1)[1]), err
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)


def test_kernel_tqdm_auto_has_widgets():
    "In a kernel (tqdm.auto picks the notebook bar there), the bar is a widget without the IProgress warning; with "
    "ipywidgets hidden, the same code warns (what a kernel printed before ipywidgets was in the `lab` extra)"
    res, _ = in_kernel(TQDM_CHECK)
    assert res['installed'] == dict(widget=True, warnings=[]), res
    assert not res['without']['widget'] and any('IProgress not found' in w for w in res['without']['warnings']), res


README_EXAMPLES = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    from gte_bench.uie import load_extractor
    ex = load_extractor()
    paths = ex.extract('1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资。', {'人物': None, '组织机构': None})
    ex.extract('谷口清太郎在日本积极筹资。', {'人物': None})
    from gte_bench.mgeo import load_matcher
    mt = load_matcher()
    m = mt.match('后湖金桥大道绿色新都116—120栋116号', '金桥大道46号宏宇·绿色新都120幢'); mt.match('北京', '上海')
import transformers
print('RESULT', json.dumps(dict(attn=[ex.attn_used, mt.attn_used], weights=[ex.weights, mt.weights], transformers=transformers.__version__,
                                warnings=[[w.category.__name__, str(w.message)] for w in caught])))
"""


def test_readme_examples_quiet_in_kernel():
    "The README's `load_extractor()` + `extract` and `load_matcher().match` in a fresh kernel: one UserWarning each "
    "that the random weights' outputs are noise, and no other warning or log line (transformers warned about "
    "SiameseUIE's upper encoder having no attention implementation)"
    res, err = in_kernel(README_EXAMPLES)
    assert res['weights'] == ['random', 'random'] and res['attn'] == ['sdpa', 'sdpa'], res
    msgs = res['warnings']
    if tuple(map(int, res['transformers'].split('.')[:2])) < (4, 45):    # the floor's own notice on every tokenizer built
        msgs = [m for m in msgs if not m[1].startswith('`clean_up_tokenization_spaces` was not set')]
    assert [c for c, _ in msgs] == ['UserWarning', 'UserWarning'], msgs
    assert msgs[0][1].startswith("random-weight preset 'siamese-uie-chinese-base': decoded spans are noise"), msgs
    assert msgs[1][1].startswith("random-weight preset 'mgeo-address-alignment': the labels are noise"), msgs
    assert 'AttentionInterface' not in err and '[transformers]' not in err, err
    assert err.strip() == '', err
