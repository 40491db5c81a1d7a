"""Fresh Python processes with this checkout first on the import path.

For what only a new process shows: the CLI's exit code and stderr end to end, the seed
script's report, a cold or warm numba cache, a thread count, a whole command's wall clock.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: The checkout this package was imported from (an editable install or ``PYTHONPATH=.``).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The original research script, ``../shared/seed`` beside the checkout unless ``QKALIGN_SEED_DIR`` says otherwise.
SEED_SCRIPT = (Path(os.environ.get("QKALIGN_SEED_DIR", REPO_ROOT.parent / "shared" / "seed"))
               / "analyze_operator_alignment.py")


def checkout_env(**extra):
    """This process's environment with the checkout first on ``PYTHONPATH`` and ``extra`` set (as strings)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **{key: str(value) for key, value in extra.items()})


def run_python(args, *, cwd=None, timeout=600, **env):
    """``python ARGS`` in a new process, environment variables ``env`` added; a CompletedProcess with
    str output, decoded as it came (text mode would turn a progress bar's carriage returns into newlines)."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=checkout_env(**env),
                          capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def run_qkalign(*args, cwd=None, **env):
    """``python -m qkalign ARGS``: the command as a user runs it."""
    return run_python(["-m", "qkalign", *args], cwd=cwd, **env)


#: Python code after which every ``import torch`` raises ImportError, as in an install without the torch extra.
NO_TORCH = "import sys; sys.modules['torch'] = None"


def run_qkalign_without_torch(*args, cwd=None, **env):
    """``python -m qkalign ARGS`` in a process where ``import torch`` fails (see :data:`NO_TORCH`)."""
    code = f"{NO_TORCH}; import runpy; runpy.run_module('qkalign', run_name='__main__', alter_sys=True)"
    return run_python(["-c", code, *args], cwd=cwd, **env)


def run_concurrently(commands, runner=run_qkalign):
    """``{name: runner(*args)}`` (:func:`run_qkalign` by default) for ``commands = {name: args}``, all
    processes started at once (each spends seconds importing its libraries; the cores share that wait)."""
    with ThreadPoolExecutor(max(len(commands), 1)) as pool:
        futures = {name: pool.submit(runner, *args) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def run_seed(json_path, *args):
    """The seed script on ``json_path``: a CompletedProcess."""
    return run_python([SEED_SCRIPT, json_path, *args])


def run_timed(code, *args, **env):
    """``python -c CODE ARGS`` whose last stdout line is a JSON object of timings: that object.

    Raises RuntimeError with the process's stderr when it fails.
    """
    proc = run_python(["-c", code, *args], cwd=REPO_ROOT, timeout=1800, **env)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])
