"The GPU check's dry run, as `make test` runs it: the script is walked on this CPU, so it cannot rot between GPU runs"
import json, re, subprocess, time
from pathlib import Path

from gte_bench.gpucheck import STEPS, TOTAL_BUDGET_S

ROOT = Path(__file__).resolve().parent.parent


def test_make_gpu_check_dry_run_walks_every_step(tmp_path):
    "make gpu-check --dry-run: every step in its own process, a line for each, all of them dry, in under a minute"
    t0 = time.monotonic()
    r = subprocess.run(['make', '-s', 'gpu-check', f'GPU_CHECK_ARGS=--dry-run --out {tmp_path}'], cwd=ROOT, capture_output=True,
                       text=True, timeout=180)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if re.match(r'\d+\. ', l)]
    assert [l.split()[1] for l in lines] == [s.name for s in STEPS], r.stdout
    summary = json.loads((tmp_path / 'steps.json').read_text())
    assert [s['status'] for s in summary['steps']] == ['dry'] * len(STEPS), summary
    assert took < 60, f'the dry run took {took:.0f} s'
    assert sum(s.budget_s for s in STEPS) < TOTAL_BUDGET_S <= 480          # under eight minutes by construction
    assert (tmp_path / 'env.json').exists() and 'dry' in (tmp_path / 'README.md').read_text()
