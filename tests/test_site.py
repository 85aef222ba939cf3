"""The docs site, opened in headless Chromium (Debian's chromium-headless-shell driven by playwright's Python API).

`make test` builds the site first, with every notebook executed (`tools/docs`), and points `GTE_BENCH_SITE` at it;
run alone, this module builds a site without executing the notebooks into a temporary folder."""
import functools, http.server, json, os, re, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

from conftest import ROOT

CHROMIUM = shutil.which('chromium-headless-shell') or '/usr/bin/chromium-headless-shell'
SHOTS = ROOT / 'test-output' / 'site'


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The built site's folder"
    if os.environ.get('GTE_BENCH_SITE'): return Path(os.environ['GTE_BENCH_SITE'])
    out = tmp_path_factory.mktemp('site')
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'docs'), '--no-exec', '--jobs', '2', '--out', str(out)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


@pytest.fixture(scope='module')
def served(site):
    "The site on a free loopback port: its base URL"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown(); srv.server_close()


@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    assert Path(CHROMIUM).exists(), f'{CHROMIUM} is missing: `make docs-deps` installs Debian\'s chromium-headless-shell'
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                                              '--disable-component-update', '--disable-sync'])
        yield b
        b.close()


def visit(browser, url: str) -> dict:
    "Open a page: its JavaScript errors, failed requests, broken images, links and ids"
    pg = browser.new_page()
    errors, failed = [], []
    pg.on('pageerror', lambda e: errors.append(str(e)))
    pg.on('console', lambda m: m.type == 'error' and errors.append(m.text))
    pg.on('requestfailed', lambda r: failed.append(r.url))
    pg.on('response', lambda r: r.status >= 400 and failed.append(f'{r.status} {r.url}'))
    pg.goto(url, wait_until='load', timeout=30_000)
    got = pg.evaluate('''() => ({
        ids: [...document.querySelectorAll('[id]')].map(e => e.id),
        links: [...document.querySelectorAll('a[href]')].map(a => a.href),
        broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
        images: document.images.length, text: document.body.innerText})''')
    pg.close()
    return dict(got, errors=errors, failed=failed)


@pytest.fixture(scope='module')
def pages(site, served, browser):
    "Every page of the site, visited once"
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html') if not p.relative_to(site).parts[0].startswith('_'))
    assert len(files) > 30, files
    return {f: visit(browser, served + f) for f in files}


def test_pages_load_without_errors(pages):
    bad = {f: (p['errors'], p['failed']) for f, p in pages.items() if p['errors'] or p['failed']}
    assert not bad, bad


def test_links_and_anchors_resolve(pages, served, site):
    "Every internal link reaches a page of the site, and its anchor an element of that page"
    broken = []
    for f, p in pages.items():
        for href in p['links']:
            if not href.startswith(served): continue
            u = urlparse(href)
            path = unquote(u.path)[1:] or 'index.html'
            if path.endswith('/'): path += 'index.html'
            if not (site / path).is_file(): broken.append((f, href)); continue
            if u.fragment and path in pages and unquote(u.fragment) not in pages[path]['ids']: broken.append((f, href))
    assert not broken, broken[:30]


def test_images_load(pages):
    assert not {f: p['broken'] for f, p in pages.items() if p['broken']}
    assert sum(p['images'] for f, p in pages.items() if f.startswith('reports/')) >= 8     # the reports' figures


def test_every_exported_name_has_its_entry(pages):
    "Each module's page holds an anchored entry for every function and class it exports, where nbdev's index puts it"
    import importlib
    from gte_bench._modidx import d
    missing, n = [], 0
    for mod, syms in d['syms'].items():
        for name in importlib.import_module(mod).__all__:
            if f'{mod}.{name}' not in syms: continue                       # constants: nbdev documents none
            n += 1
            page, _, anchor = syms[f'{mod}.{name}'][0].partition('#')
            if page not in pages or anchor not in pages[page]['ids']: missing.append(f'{mod}.{name}')
    assert not missing, missing[:30]
    assert n > 300 and len(d['syms']) >= 20, (n, len(d['syms']))


def test_search_finds_an_exported_function(browser, served):
    pg = browser.new_page()
    pg.goto(served + 'search.html?q=repeated_search', wait_until='load')
    pg.wait_for_selector('#search-results ul li a', timeout=20_000)
    hits = pg.eval_on_selector_all('#search-results ul li a', 'els => els.map(e => e.getAttribute("href"))')
    pg.close()
    assert any('api/loadtest.html' in h for h in hits), hits


def test_chinese_text_renders(browser, served, pages):
    "Pages carry Chinese text, and the machine has a font that covers it (not tofu)"
    assert any(re.search(r'[\u4e00-\u9fff]{4}', p['text']) for p in pages.values())
    fonts = subprocess.run(['fc-list', ':lang=zh', 'family'], capture_output=True, text=True).stdout
    assert fonts.strip(), 'no CJK font: `make docs-deps` installs fonts-wqy-microhei'
    pg = browser.new_page()
    pg.goto(served + 'api/data.html', wait_until='load')
    # drawn with a font that has the glyphs, two characters differ; without one, both are the same empty box
    same = pg.evaluate('''() => { const draw = ch => { const c = document.createElement('canvas'); c.width = c.height = 40;
        const x = c.getContext('2d'); x.font = '32px sans-serif'; x.fillText(ch, 2, 34);
        return Array.from(x.getImageData(0, 0, 40, 40).data).join(','); };
        return [draw('北') === draw('京'), draw('北') === draw(' ')]; }''')
    pg.close()
    assert same == [False, False], same


def test_tutorial_screenshot(browser, served, pages):
    "A tutorial page, for a person to look at: test-output/site/tutorial.png"
    tutorials = sorted(f for f in pages if f.startswith('tutorials/') and not f.endswith('index.html'))
    assert len(tutorials) >= 4, tutorials
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport=dict(width=1280, height=1600))
    pg.goto(served + tutorials[0], wait_until='load')
    pg.screenshot(path=str(SHOTS / 'tutorial.png'), full_page=False)
    pg.close()
    assert (SHOTS / 'tutorial.png').stat().st_size > 20_000
