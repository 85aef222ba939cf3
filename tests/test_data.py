"Property tests of the address generator, the noise operators and the labelled pairs."
import json, random, re

import pandas as pd
from hypothesis import given, settings, strategies as st

from gte_bench.data import (ADMIN_ROLES, DEFAULT_RATES, LABELS, NOISE_OPS, address_parts, apply_noise, join,
                            make_addresses, make_pairs, places, random_address)
from conftest import gte_bench

seeds = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=60, deadline=None)
HAN = re.compile(r'[\u4e00-\u9fa5]')


@FAST
@given(seeds, st.sampled_from(sorted(NOISE_OPS)), st.floats(0, 1))
def test_noise_never_empties_and_keeps_the_place(seed, op, rate):
    a = random_address(random.Random(seed))
    parts = address_parts(a)
    out = NOISE_OPS[op](parts, random.Random(seed + 1), rate)
    roles = [r for r, _ in out]
    assert len(HAN.findall(join(out))) >= 4, join(out)
    assert {'road', 'number', 'poi'} <= set(roles)             # only administrative levels may be dropped
    assert out is not parts and parts == address_parts(a)      # pure: the input is untouched
    if op not in ('chinese_numerals', 'fullwidth'):             # the numbers are the identity: nothing else touches them
        assert re.findall(r'\d+', join(out)) == re.findall(r'\d+', join(parts))


@FAST
@given(seeds, st.sampled_from(sorted(NOISE_OPS)))
def test_rate_zero_is_identity_and_ops_are_seeded(seed, op):
    parts = address_parts(random_address(random.Random(seed)))
    assert NOISE_OPS[op](parts, random.Random(0), 0.0) == parts
    assert NOISE_OPS[op](parts, random.Random(seed), 1.0) == NOISE_OPS[op](parts, random.Random(seed), 1.0)


@FAST
@given(seeds)
def test_composed_noise_reports_what_it_changed(seed):
    rng = random.Random(seed)
    parts = address_parts(random_address(rng))
    out, applied = apply_noise(parts, rng, ops=sorted(NOISE_OPS))
    assert set(applied) <= set(NOISE_OPS)
    assert (out != parts) == bool(applied)


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(0, 40))
def test_pair_labels_agree_with_what_changed(seed, n):
    df = make_pairs(n, seed=seed, truth=True)
    assert len(df) == n and set(df.label) <= set(LABELS)
    for r in df.to_dict('records'):
        a, b = r['_a'], r['_b']
        if r['label'] == 'exact_match': assert a == b
        elif r['label'] == 'partial_match':
            assert (a.place, a.road, a.poi) == (b.place, b.road, b.poi) and a != b
            assert r['kind'] in ('number', 'building', 'room')
        else:
            assert a.place != b.place
            same_city = a.place.adcode[:4] == b.place.adcode[:4]
            assert r['kind'] == ('other_district' if same_city else 'other_city')
        assert r['a'] and r['b'] and r['a_adcode'] == a.place.adcode
        for o in json.loads(r['ops']): assert o[:2] in ('a:', 'b:') and o[2:] in NOISE_OPS


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_same_seed_same_pairs(seed):
    pd.testing.assert_frame_equal(make_pairs(30, seed=seed), make_pairs(30, seed=seed))
    assert not make_pairs(30, seed=seed).a.equals(make_pairs(30, seed=seed + 1).a)


def test_every_province_and_municipality_is_coherent():
    rng = random.Random(0)
    for p in places():
        s = join(address_parts(random_address(rng, p)))
        assert s.startswith(p.province)
        if p.municipality: assert not s.startswith(p.province * 2)
        if p.county: assert p.county in s
        if p.prefecture and not p.municipality: assert s.index(p.prefecture) < (s.index(p.county) if p.county else len(s))


def test_cli_same_seed_same_bytes(tmp_path):
    for kind, suffix in [('addresses', '.parquet'), ('pairs', '.jsonl'), ('pairs', '.parquet')]:
        outs = []
        for i in range(2):
            out = tmp_path / f'{kind}{i}{suffix}'
            r = gte_bench('data', kind, '--n', 300, '--seed', 7, '--out', out)
            assert r.returncode == 0, r.stderr
            outs.append(out.read_bytes())
        assert outs[0] == outs[1]
    df = pd.read_json(tmp_path / 'pairs0.jsonl', lines=True)
    assert len(df) == 300 and {'a', 'b', 'label', 'ops'} <= set(df.columns)


def test_cli_writes_the_format_its_file_name_says(tmp_path):
    "--out x.csv is CSV (it used to be Parquet under that name), .jsonl JSON lines, .parquet Parquet; other suffixes and --n 0 are refused"
    frames = {}
    for suffix, read in [('.csv', pd.read_csv), ('.jsonl', lambda p: pd.read_json(p, lines=True)), ('.parquet', pd.read_parquet)]:
        r = gte_bench('data', 'addresses', '--n', 5, '--out', tmp_path / f'a{suffix}')
        assert r.returncode == 0, r.stderr
        frames[suffix] = read(tmp_path / f'a{suffix}')
    assert all(list(f.clean) == list(frames['.parquet'].clean) for f in frames.values())
    assert (tmp_path / 'a.csv').read_text(encoding='utf-8').startswith('id,text,clean,')
    for args, want in [(('--n', 5, '--out', tmp_path / 'a.txt'), "cannot write"), (('--n', 5, '--out', tmp_path / 'a'), '.csv (CSV)'),
                       (('--n', 0, '--out', tmp_path / 'z.jsonl'), '--n must be at least 1 (the rows to write), got 0')]:
        r = gte_bench('data', 'addresses', *args)
        assert r.returncode == 2 and want in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / 'a.txt').exists() and not (tmp_path / 'z.jsonl').exists()


def test_committed_samples_are_what_the_generator_makes(tmp_path):
    from conftest import ROOT
    for name, kind, n in [('addresses_sample.jsonl', 'addresses', 500), ('pairs_sample.jsonl', 'pairs', 1000),
                          ('texts_sample.jsonl', 'texts', 1200), ('uie_sample.jsonl', 'uie', 300)]:
        out = tmp_path / name
        assert gte_bench('data', kind, '--n', n, '--seed', 0, '--out', out).returncode == 0
        assert out.read_bytes() == (ROOT / 'data' / name).read_bytes(), f'data/{name} differs from its generator'
