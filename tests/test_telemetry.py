"Telemetry: the NVML path against a stub `pynvml` with known values, the CPU fallback on real readings, the leak check."
import math, os, sys, time, types

import numpy as np
import pandas as pd
import pytest

from gte_bench import telemetry as tm
from gte_bench.telemetry import MB, Sampler, decode_throttle, leak_check


class _Err(Exception):
    "Stands in for pynvml.NVMLError: carries the NVML return code in `value`"
    def __init__(self, value): super().__init__(f'NVML error {value}'); self.value = value


def make_stub(n_dev=2, energy_step_mj=(500, 100), power_mw=(150_000, 50_000), old_binding=False):
    "A `pynvml` module with known answers; `calls` counts calls per (function, device)"
    nv = types.ModuleType('pynvml')
    nv.NVMLError = _Err
    class NotSupported(_Err):
        def __init__(self): super().__init__(3)
    nv.NVMLError_NotSupported = NotSupported
    nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_NO_PERMISSION = 3, 4
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 1, 2, 0
    nv.NVML_PCIE_UTIL_TX_BYTES, nv.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    nv.calls, nv.state = {}, dict(init=0, shutdown=0, energy=[10**9] * n_dev)
    def count(name, h=None): nv.calls[name, h] = nv.calls.get((name, h), 0) + 1
    def init(): count('init'); nv.state['init'] += 1
    def shutdown(): nv.state['shutdown'] += 1
    nv.nvmlInit, nv.nvmlShutdown = init, shutdown
    nv.nvmlDeviceGetCount = lambda: n_dev
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetUUID = lambda h: f'GPU-0000000{h}-aaaa-bbbb-cccc-dddddddddddd'
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37 + h, memory=5)
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(1000 + 1000 * h) * MB, total=80_000 * MB)
    def procs(h):
        if h: return []                               # this process has no context on device 1
        return [types.SimpleNamespace(pid=1, usedGpuMemory=5 * MB),
                types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=300 * MB)]
    nv.nvmlDeviceGetComputeRunningProcesses = procs
    nv.nvmlDeviceGetPowerUsage = lambda h: power_mw[h]
    def energy(h):
        if energy_step_mj is None: raise NotSupported()
        nv.state['energy'][h] += energy_step_mj[h]; return nv.state['energy'][h]
    nv.nvmlDeviceGetTotalEnergyConsumption = energy
    def temp(h, sensor):
        assert sensor == 0
        return 60 + h
    nv.nvmlDeviceGetTemperature = temp
    nv.nvmlDeviceGetClockInfo = lambda h, kind: {1: 1980, 2: 2619}[kind]
    def pcie(h, counter):
        count('pcie', h)
        if h: raise NotSupported()
        return {0: 1234, 1: 5678}[counter]
    nv.nvmlDeviceGetPcieThroughput = pcie
    reasons = lambda h: 0x4 | 0x40 if h == 0 else 0x1
    if old_binding: nv.nvmlDeviceGetCurrentClocksThrottleReasons = reasons
    else: nv.nvmlDeviceGetCurrentClocksEventReasons = reasons
    return nv


@pytest.fixture
def stub(monkeypatch):
    "Install a stub pynvml in sys.modules (the sampler imports it at start); returns a factory"
    def install(**kw):
        nv = make_stub(**kw); monkeypatch.setitem(sys.modules, 'pynvml', nv); return nv
    return install


def run_sampler(seconds=0.15, items=None, **kw):
    with Sampler(**{'interval_s': 0.01, **kw}) as s:
        s.mark('warmup'); time.sleep(seconds / 3)
        s.mark('step 1'); time.sleep(2 * seconds / 3)
    return s, s.to_frame(), s.summary(items=items)


def test_nvml_parsing_units_and_summary(stub):
    nv = stub()
    s, df, sm = run_sampler(items=250, pcie_every=3)
    assert sm['telemetry_source'] == 'nvml' and nv.state['init'] == nv.state['shutdown'] == 1
    assert list(df.columns[:3]) == ['t_s', 'phase', 'device']
    assert set(tm.NVML_COLUMNS + tm.HOST_COLUMNS) <= set(df.columns)
    d0, d1 = df[df.device == 'nvml:0'].reset_index(drop=True), df[df.device == 'nvml:1'].reset_index(drop=True)
    assert len(d0) == len(d1) == sm['telemetry_samples'] >= 8
    assert (d0.util_pct == 37).all() and (d1.util_pct == 38).all()
    assert (d0.mem_used_mb == 1000).all() and (d1.mem_used_mb == 2000).all()
    assert (d0.proc_mem_mb == 300).all() and d1.proc_mem_mb.isna().all()      # pid matched; absent -> None
    assert (d0.power_w == 150).all() and (d1.power_w == 50).all()               # mW -> W
    assert (d0.temp_c == 60).all() and (d0.sm_clock_mhz == 1980).all() and (d0.mem_clock_mhz == 2619).all()
    assert (d0.throttle_reasons == 'sw_power_cap|hw_thermal_slowdown').all() and (d1.throttle_reasons == 'gpu_idle').all()
    # energy: the counter since each device's first sample, one step per read
    assert d0.energy_mj.tolist() == [500.0 * k for k in range(len(d0))]
    assert d1.energy_mj.tolist() == [100.0 * k for k in range(len(d1))]
    n = len(d0)
    assert sm['energy_j'] == pytest.approx((n - 1) * 0.6) and sm['energy_source'] == 'nvml total-energy counter'
    assert sm['j_per_1k_items'] == pytest.approx(1e3 * sm['energy_j'] / 250)
    # PCIe: only every 3rd tick on device 0; device 1 said NotSupported once and was not asked again
    read = d0.pcie_tx_kbps.notna()
    assert read.tolist() == [k % 3 == 0 for k in range(n)]
    assert (d0.pcie_tx_kbps[read] == 1234).all() and (d0.pcie_rx_kbps[read] == 5678).all()
    assert d1.pcie_tx_kbps.isna().all() and nv.calls[('pcie', 1)] == 2           # tx and rx, once each
    assert sm['telemetry_unavailable'] == 'nvml:1 pcie_rx_kbps,nvml:1 pcie_tx_kbps'
    assert sm['telemetry_errors'] == 0
    # device totals per tick, means over devices, maxima
    assert (sm['mem_peak_mb'], sm['mem_mean_mb'], sm['mem_source']) == (3000, 3000, 'nvml device memory used')
    assert sm['util_mean_pct'] == 37.5 and sm['power_mean_w'] == 200 and sm['temp_max_c'] == 61
    assert sm['proc_mem_peak_mb'] == 300 and 'not SM occupancy' in sm['util_caveat']
    assert sm['torch_allocated_peak_mb'] is None and sm['rss_peak_mb'] > 10
    assert set(df.phase.dropna()) == {'warmup', 'step 1'}
    st = s.summary(phase='step 1')
    assert st['telemetry_samples'] == int((d0.phase == 'step 1').sum())
    none = s.summary(phase='no such phase')
    assert none['telemetry_samples'] == 0 and none['mem_peak_mb'] is None and none['energy_j'] is None


def test_nvml_device_choice_old_binding_and_errors(stub):
    nv = stub(old_binding=True)
    s, df, sm = run_sampler(gpus=[1])
    assert set(df.device) == {'nvml:1'} and (df.throttle_reasons == 'gpu_idle').all()
    del nv.nvmlDeviceGetCurrentClocksThrottleReasons                              # a binding with neither name
    s, df, sm = run_sampler(gpus=[1])
    assert df.throttle_reasons.isna().all() and sm['telemetry_errors'] == 0 and len(df) >= 8
    with pytest.raises(ValueError, match='not NVML indices'): Sampler(gpus=[5]).start()
    assert nv.state['init'] == nv.state['shutdown']                               # closed again after the error
    # an NVML error other than NotSupported, now and then: counted, the field is None, sampling goes on
    n_temp = [0]
    def flaky_temp(h, sensor):
        n_temp[0] += 1
        if n_temp[0] % 4 == 0: raise nv.NVMLError(15)                           # GPU is lost
        return 60
    nv.nvmlDeviceGetTemperature = flaky_temp
    s, df, sm = run_sampler(gpus=[0])
    assert sm['telemetry_errors'] == n_temp[0] // 4 >= 2
    assert df.temp_c.isna().sum() == sm['telemetry_errors'] and (df.temp_c.dropna() == 60).all()
    assert 'temp_c' in sm['telemetry_last_error'] and len(df) == sm['telemetry_samples'] >= 8


def test_energy_falls_back_to_power_integral(stub):
    stub(energy_step_mj=None, power_mw=(100_000, 100_000))
    s, df, sm = run_sampler(seconds=0.2, gpus=[0])
    assert df.energy_mj.isna().all() and 'nvml:0 energy_mj' in sm['telemetry_unavailable']
    assert sm['energy_source'].startswith('power integral')
    assert sm['energy_j'] == pytest.approx(100 * sm['telemetry_duration_s'])     # 100 W over the window
    stub(energy_step_mj=(0, 0))                                                 # a counter that did not move
    s, df, sm = run_sampler(gpus=[0])
    assert sm['energy_source'].startswith('power integral') and sm['energy_j'] > 0


def test_fallback_reasons(stub, monkeypatch):
    nv = stub()
    def boom(): raise nv.NVMLError(9)                                           # driver not loaded
    nv.nvmlInit = boom
    assert Sampler().start().stop().source == 'cpu-fallback: NVML unavailable (_Err: NVML error 9)'
    nv = stub(n_dev=0)
    assert Sampler().start().stop().source == 'cpu-fallback: NVML sees no device'
    assert nv.state['init'] == nv.state['shutdown'] == 1
    assert Sampler(gpus=[]).start().stop().source == 'cpu-fallback: no GPU asked for (gpus=[])'
    monkeypatch.setitem(sys.modules, 'pynvml', None)                            # import pynvml raises ImportError
    assert Sampler().start().stop().source == 'cpu-fallback: nvidia-ml-py is not installed'


def _cpu_fallback_readings():
    "The fallback's checks, run in a fresh interpreter by the test below (plain asserts there: give them messages)"
    cpu_s = lambda: sum(os.times()[:2])
    with Sampler(interval_s=0.02, gpus=[]) as s:
        s.mark('busy'); c0 = cpu_s()
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end: pass      # one core, pure Python: no BLAS threads left spinning afterwards
        c1 = cpu_s(); s.mark('idle'); time.sleep(0.3)
    df, sm = s.to_frame(), s.summary()
    assert list(df.columns) == ['t_s', 'phase', 'device', 'rss_mb', 'cpu_pct', 'sys_cpu_pct'], list(df.columns)
    assert sm['telemetry_source'].startswith('cpu-fallback') and not s._thread.is_alive() and s._thread.daemon, sm
    assert df.rss_mb.between(10, psutil_total_mb()).all(), df.rss_mb.describe()
    busy, idle = df[df.phase == 'busy'].cpu_pct.iloc[1:].mean(), df[df.phase == 'idle'].cpu_pct.iloc[1:].mean()
    assert busy > 40 and busy > idle, (busy, idle)                              # the loop shows in CPU%
    # the samples account for the process's CPU time in the busy phase (os.times), within a tick at each boundary
    b = df[df.phase == 'busy']; dt = b.t_s.diff().fillna(b.t_s.iloc[0] - df[df.t_s < b.t_s.iloc[0]].t_s.max())
    got = (b.cpu_pct * dt).sum() / 100
    assert abs(got - (c1 - c0)) <= 0.12, (got, c1 - c0)
    assert df.sys_cpu_pct.notna().sum() >= 3 and df.sys_cpu_pct.dropna().between(0, 100).all(), df.sys_cpu_pct
    assert abs(sm['telemetry_hz'] - 50) <= 15 and sm['telemetry_errors'] == 0, sm
    assert sm['mem_peak_mb'] == df.rss_mb.max() and sm['mem_source'] == 'process RSS', sm
    assert sm['util_mean_pct'] is None and sm['energy_j'] is None and sm['j_per_1k_items'] is None, sm
    assert sm['cpu_mean_pct'] > 0 and 0 <= sm['telemetry_cpu_pct'] < 50, sm
    assert list(s.events.phase) == ['busy', 'idle'] and s.events.t_s.is_monotonic_increasing, s.events
    return busy, idle


def test_cpu_fallback_real_readings():
    """No NVIDIA driver on this machine: process RSS and CPU%, real psutil readings. CPU% is the whole process's,
    so the check runs in a fresh interpreter: threads that earlier tests left in this one (ORT, OpenMP, LoadGen)
    would count in its idle phase."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')) as ex:
        busy, idle = ex.submit(_cpu_fallback_readings).result(timeout=120)
    assert busy > idle


def psutil_total_mb():
    import psutil
    return psutil.virtual_memory().total / MB


def test_validation_prompt_stop_and_survival():
    for bad in (0.005, 0, -1, float('inf'), float('nan'), '0.1'):
        with pytest.raises(ValueError, match='100 Hz at most'): Sampler(interval_s=bad)
    with pytest.raises(ValueError, match='pcie_every'): Sampler(pcie_every=-2)
    assert Sampler(interval_s=0.01).pcie_every == 100 and Sampler().pcie_every == 10
    s = Sampler(interval_s=10.0, gpus=[])
    with pytest.raises(ValueError, match='non-empty string'): s.mark('')
    s.start(); t0 = time.perf_counter(); s.stop()
    assert time.perf_counter() - t0 < 0.5 and len(s.to_frame()) == 2 and s.summary()['telemetry_hz'] is None
    assert s.stop() is s                                                        # a second stop does nothing
    with pytest.raises(RuntimeError, match='already started'): s.start()
    s = Sampler(interval_s=0.01, gpus=[]).start()
    real, fails = s._host, [3]
    def flaky(tick):
        if fails[0]: fails[0] -= 1; raise OSError('hiccup')
        return real(tick)
    s._host = flaky
    time.sleep(0.15); s.stop()
    sm = s.summary()
    assert sm['telemetry_errors'] == 3 and 'hiccup' in sm['telemetry_last_error'] and sm['telemetry_samples'] > 5


def test_decode_throttle_matches_binding():
    import pynvml
    assert decode_throttle(0x4 | 0x40) == 'sw_power_cap|hw_thermal_slowdown'
    assert (decode_throttle(0), decode_throttle(None), decode_throttle(0x200)) == ('none', None, 'unknown_0x200')
    for bit, name in tm.THROTTLE_BITS.items():
        assert getattr(pynvml, 'nvmlClocksEventReason' + ''.join(w.capitalize() for w in name.split('_')), bit) == bit


def _series(y, t): return pd.Series(y, index=t)

@pytest.mark.parametrize('seed', range(5))
def test_leak_check_synthetic(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(0, 300, 0.5)
    per, ph = rng.uniform(4, 20), rng.uniform(0, 20)
    saw = 40 * (((t + ph) % per) / per)
    cases = dict(flat=(500 + rng.normal(0, 2, t.size), 'stable'),
                 ramp=(500 + 4 * t / 60 + rng.normal(0, 2, t.size), 'leak'),
                 sawtooth=(500 + saw, 'stable'),
                 sawtooth_leak=(500 + saw + 4 * t / 60, 'leak'),
                 step=(500 + 50 * (t > rng.uniform(30, 280)) + rng.normal(0, 1, t.size), 'stable'),
                 slow=(500 + 0.5 * t / 60 + rng.normal(0, 0.2, t.size), 'stable'))    # below 1 MB/min
    got = {k: leak_check(_series(y, t))['verdict'] for k, (y, _) in cases.items()}
    assert got == {k: v for k, (_, v) in cases.items()}
    r = leak_check(_series(cases['ramp'][0], t))
    assert r['slope_mb_per_min'] == pytest.approx(4, abs=0.3) and r['r2'] > 0.8
    assert r['growth_mb'] == pytest.approx(r['slope_mb_per_min'] * r['duration_s'] / 60)
    assert r['n'] == int((t >= 10).sum())


def test_leak_check_short_and_frames():
    t = np.arange(0, 10, 0.1)
    r = leak_check(_series(500 + 100 * t, t), warmup_s=0)
    assert r['verdict'] == 'too short' and math.isnan(r['slope_mb_per_min']) and 'need 60 s' in r['reason']
    assert leak_check(_series(500 + 100 * t, t), warmup_s=20)['n'] == 0
    # an NVML-like frame: two devices per tick are summed; host columns are taken once per tick
    ts = np.arange(0, 120, 1.0)
    df = pd.concat([pd.DataFrame(dict(t_s=ts, device=f'nvml:{i}', mem_used_mb=1000 + 3 * i * ts / 60,
                                      rss_mb=700.0)) for i in (1, 2)])
    r = leak_check(df)
    assert (r['mem_col'], r['verdict']) == ('mem_used_mb', 'leak') and r['slope_mb_per_min'] == pytest.approx(9)
    r = leak_check(df, mem_col='rss_mb')
    assert r['verdict'] == 'stable' and r['slope_mb_per_min'] == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="need columns 't_s' and 'nope'"): leak_check(df, mem_col='nope')


def test_nvml_index_matches_uuid(stub, monkeypatch):
    import torch
    nv = stub(n_dev=3)
    props = {0: 'GPU-00000002-aaaa-bbbb-cccc-dddddddddddd', 1: '00000000-aaaa-bbbb-cccc-dddddddddddd'}
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda i: types.SimpleNamespace(uuid=props[i]))
    assert tm.nvml_index('cuda:0') == 2 and tm.nvml_index(1) == 0               # CUDA 0 is NVML 2: not the same order
    assert nv.state['init'] == nv.state['shutdown'] == 2
    props[1] = 'ffffffff-0000-0000-0000-000000000000'
    with pytest.raises(LookupError, match='no NVML device'): tm.nvml_index('cuda:1')
    with pytest.raises(ValueError, match='not a CUDA device'): tm.nvml_index('cpu')


def test_overhead_and_plot(stub, tmp_path):
    ov = tm.sampler_overhead(lambda: time.sleep(0.03), interval_s=0.01, repeats=2, gpus=[])
    assert ov['base_median_s'] >= 0.03 and ov['sampled_median_s'] >= 0.03 and ov['repeats'] == 2
    assert ov['slowdown'] == pytest.approx(ov['sampled_median_s'] / ov['base_median_s'])
    assert ov['telemetry_source'].startswith('cpu-fallback') and ov['sampler_hz'] == pytest.approx(100, abs=30)
    with pytest.raises(ValueError, match='repeats'): tm.sampler_overhead(lambda: None, repeats=0)
    stub()
    s, df, _ = run_sampler(seconds=0.1)
    import matplotlib; matplotlib.use('Agg')
    fig = tm.plot_timeline(df, path=tmp_path / 't.png', title='stub')
    assert [a.get_ylabel() for a in fig.axes] == ['util_pct', 'mem_used_mb', 'power_w']
    assert (tmp_path / 't.png').stat().st_size > 1000
