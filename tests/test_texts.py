"Properties of the seeded text corpora: determinism, length control, clean text, exact UIE spans and schema checks."
import hashlib, json, os, subprocess, sys, unicodedata

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import fastcore.test as ft
from gte_bench.texts import DOMAINS, UIE_SCHEMAS, UIE_TASKS, check_schema, make_texts, make_uie

seeds = st.integers(0, 2**63)
fast = settings(max_examples=30, deadline=None)


def within(n, target): return abs(n - target) <= max(3, 0.1 * target)
def has_control(s): return any(unicodedata.category(c) == 'Cc' for c in s)


@fast
@given(seeds)
def test_same_seed_same_frame_other_seed_other_texts(seed):
    a = make_texts(12, seed=seed)
    pd.testing.assert_frame_equal(a, make_texts(12, seed=seed))
    assert (a.text != make_texts(12, seed=seed + 1).text).any()
    u = make_uie(8, seed=seed)
    pd.testing.assert_frame_equal(u, make_uie(8, seed=seed))
    assert (u.text != make_uie(8, seed=seed + 1).text).any()


SNIPPET = ("from gte_bench.texts import make_texts, make_uie; import hashlib; "
           "print(hashlib.sha256((make_texts(300, seed=7).to_json() + make_uie(80, seed=7).to_json()).encode()).hexdigest())")


def test_same_output_in_other_processes():
    "Nothing depends on string hashing (set order) or other per-process state"
    outs = set()
    for hs in ('0', '1', '12345'):
        r = subprocess.run([sys.executable, '-c', SNIPPET], capture_output=True, text=True, timeout=120,
                           env={**os.environ, 'PYTHONHASHSEED': hs})
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout.strip())
    here = hashlib.sha256((make_texts(300, seed=7).to_json() + make_uie(80, seed=7).to_json()).encode()).hexdigest()
    ft.test_eq(outs, {here})


@settings(max_examples=40, deadline=None)
@given(seeds, st.lists(st.integers(10, 500), min_size=1, max_size=6),
       st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=3, unique=True))
def test_lengths_within_tolerance_and_clean(seed, lengths, domains):
    n = 2 * len(lengths) * len(domains)
    df = make_texts(n, seed=seed, lengths=lengths, domains=domains)
    ft.test_eq(list(df.columns), ['id', 'domain', 'target_chars', 'text', 'n_chars'])
    ft.test_eq(len(df), n)
    ft.test_eq(list(df.target_chars), [lengths[i % len(lengths)] for i in range(n)])
    ft.test_eq(set(df.domain), set(domains))
    assert df.id.is_unique
    for row in df.itertuples():
        assert row.text and row.text.strip(), row
        assert not has_control(row.text), row.text
        ft.test_eq(row.n_chars, len(row.text))
        assert within(row.n_chars, row.target_chars), (row.target_chars, row.n_chars, row.text)
        assert row.text[-1] in '。！？', row.text


@fast
@given(seeds, st.integers(10, 500), st.integers(10, 500))
def test_drawn_targets_stay_in_range(seed, a, b):
    lo, hi = min(a, b), max(a, b)
    df = make_texts(30, seed=seed, min_chars=lo, max_chars=hi)
    assert df.target_chars.between(lo, hi).all()
    assert all(within(n, t) for n, t in zip(df.n_chars, df.target_chars))


def test_default_corpus_covers_every_length_band():
    df = make_texts(3000, seed=0)
    counts = pd.cut(df.target_chars, [9, 20, 40, 80, 160, 320, 500]).value_counts()
    assert (counts > 300).all(), counts


def walk(text, schema, items):
    "Check every answer of the tree against the text and its level of the schema; yield the answers"
    assert isinstance(items, list)
    for a in items:
        ft.test_eq(set(a), {'type', 'span', 'offset', 'children'})
        assert isinstance(schema, dict) and a['type'] in schema, (a['type'], schema)
        s, e = a['offset']
        assert 0 <= s < e <= len(text)
        ft.test_eq(text[s:e], a['span'])
        if a['children']: assert isinstance(schema[a['type']], dict), (a, schema)
        yield a
        yield from walk(text, schema[a['type']], a['children'])


@fast
@given(seeds, st.integers(1, 40))
def test_uie_spans_match_text_and_schema(seed, n):
    df = make_uie(n, seed=seed)
    ft.test_eq(list(df.columns), ['id', 'task', 'text', 'schema', 'answers', 'n_chars'])
    ft.test_eq(list(df.task), [UIE_TASKS[i % 4] for i in range(n)])
    for row in df.itertuples():
        schema = json.loads(row.schema)
        ft.test_eq(schema, UIE_SCHEMAS[row.task])
        answers = json.loads(row.answers)
        assert answers, row.text
        items = list(walk(row.text, schema, answers))
        assert len(items) >= len(answers)
        assert not has_control(row.text)
        ft.test_eq(row.n_chars, len(row.text))


def test_uie_lengths_and_task_mix():
    df = make_uie(400, seed=3)
    ft.test_eq(df.task.value_counts().to_dict(), {t: 100 for t in UIE_TASKS})
    assert df.n_chars.min() <= 40 and df.n_chars.max() >= 250, df.n_chars.describe()
    assert '"children": [{' in ''.join(df[df.task == 'relation'].answers)   # nested answers present


@fast
@given(seeds)
def test_check_schema_accepts_generated_schemas(seed):
    for s in make_uie(4, seed=seed).schema:
        ft.test_eq(check_schema(s), json.loads(s))
        ft.test_eq(check_schema(json.loads(s)), json.loads(s))


keys = st.text(st.characters(blacklist_categories=('Cc', 'Cs')), min_size=1, max_size=6).filter(str.strip)
def level(children): return st.dictionaries(keys, children, min_size=1, max_size=3)
schemas = level(st.none() | level(st.none() | level(st.none())))


@settings(max_examples=60, deadline=None)
@given(schemas)
def test_check_schema_accepts_any_well_formed_schema(schema):
    ft.test_eq(check_schema(schema), schema)
    ft.test_eq(check_schema(json.dumps(schema, ensure_ascii=False)), schema)


def _leaf_paths(node, path=()):
    for k, v in node.items():
        if v is None: yield path + (k,)
        else: yield from _leaf_paths(v, path + (k,))


def _set(node, path, value):
    import copy
    node = copy.deepcopy(node); d = node
    for k in path[:-1]: d = d[k]
    d[path[-1]] = value
    return node


@settings(max_examples=60, deadline=None)
@given(schemas, st.data())
def test_check_schema_rejects_a_broken_leaf(schema, data):
    path = data.draw(st.sampled_from(sorted(_leaf_paths(schema), key=repr)))
    bad, exc, msg = data.draw(st.sampled_from([
        (['x'], TypeError, 'is a list, expected None or a dict'),
        ('None', TypeError, 'is a str, expected None or a dict'),
        (1, TypeError, 'is a int, expected None or a dict'),
        ({}, ValueError, 'is an empty dict'),
        ({'': None}, ValueError, 'empty key'),
        ({1: None}, TypeError, 'keys must be strings'),
        ({'a': {'b': {'c': None}}}, ValueError, 'levels deep'),
    ]))
    if isinstance(bad, dict) and bad and len(path) == 3: exc, msg = ValueError, 'levels deep'   # depth is checked first
    broken = _set(schema, path, bad)
    with pytest.raises(exc) as e: check_schema(broken)
    assert msg in str(e.value), str(e.value)
    if msg.startswith('is a'): assert 'schema' + ''.join(f'[{k!r}]' for k in path) in str(e.value)


@pytest.mark.parametrize('bad, exc, msg', [
    ({}, ValueError, 'schema is an empty dict'),
    ({'人物': ['时间']}, TypeError, "schema['人物'] is a list, expected None or a dict"),
    ({'人物': {'时间': []}}, TypeError, "schema['人物']['时间'] is a list"),
    ({1: None}, TypeError, 'keys must be strings'),
    ({'人物': None, None: None}, TypeError, 'keys must be strings'),
    ({'a': {'b': {'c': {'d': None}}}}, ValueError, "schema['a']['b']['c'] is nested 4 levels deep"),
    ({'': None}, ValueError, 'empty key'),
    ({'人物': {'  ': None}}, ValueError, "schema['人物'] has the empty key"),
    ({'人\x00物': None}, ValueError, 'control character'),
    ({'人物': {}}, ValueError, "schema['人物'] is an empty dict"),
    (['人物'], TypeError, 'schema is a list'),
    ('{"人物": None', ValueError, 'not valid JSON'),
    ('[]', TypeError, 'schema is a list'),
    (None, TypeError, 'schema is a NoneType'),
])
def test_check_schema_rejects_malformed(bad, exc, msg):
    with pytest.raises(exc) as e: check_schema(bad)
    assert msg in str(e.value), str(e.value)


@pytest.mark.parametrize('kw, exc, msg', [
    (dict(n=3, lengths=[16, 4]), ValueError, 'lengths[1]=4 is outside'),
    (dict(n=3, lengths=[16.0]), TypeError, 'lengths[0] must be an int'),
    (dict(n=3, lengths=[]), ValueError, 'lengths is empty'),
    (dict(n=3, domains=['legal']), ValueError, "unknown domains ['legal']"),
    (dict(n=3, min_chars=200, max_chars=100), ValueError, 'greater than'),
    (dict(n=-1), ValueError, 'n must be'),
])
def test_make_texts_rejects_bad_arguments(kw, exc, msg):
    with pytest.raises(exc) as e: make_texts(**kw)
    assert msg in str(e.value)


def test_prefix_stability():
    "Row i does not depend on how many rows are asked for"
    pd.testing.assert_frame_equal(make_texts(50, seed=4).head(20), make_texts(20, seed=4))
    pd.testing.assert_frame_equal(make_uie(40, seed=4).head(10), make_uie(10, seed=4))
