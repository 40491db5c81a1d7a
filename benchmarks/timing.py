"""Run a snippet in a fresh Python process and read back the timings it prints (JSON)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_timed(code, *args, **env):
    """Run ``python -c code args`` with this checkout first on the path and ``env`` added;
    its last stdout line is a JSON object, returned as a dict."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                    **{k: str(v) for k, v in env.items()})
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=full_env, cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])
