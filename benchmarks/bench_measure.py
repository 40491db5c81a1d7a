"""``qkalign measure`` on the qwen3-4b synthetic preset, against the machine's own SGEMM.

Run: ``python -m pytest benchmarks/bench_measure.py -s`` (``-s`` shows the summary lines).

The preset's weights are written once as a Qwen3-style Hugging Face folder (bfloat16,
only the tensors measure reads) to ``$QKALIGN_CACHE`` (default ``~/.cache/qkalign``).
One run then times, side by side:

- ``measure`` on that folder (float32 mode, no progress bar), its peak memory (RSS
  beyond the memory-mapped weight file, sampled) and wall time;
- one large SGEMM, giving the machine's float32 rate now, hence the time SGEMM needs
  for measure's flop count.

Two flop counts are printed: the issue's ``H (L d)^2 n`` multiply-adds (the Q Grams as
full GEMMs) and the arithmetic measure actually does (SYRKs of Q and K, ``K Q^T``,
eigenvectors). The targets are on the first: time <= 1.5x SGEMM and <= 3 GB beyond the file.
"""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qkalign.synthetic import PRESETS, make_weights

PRESET = "qwen3-4b"
TIME_RATIO_TARGET = 1.5
MEMORY_TARGET_BYTES = 3 * 2**30


def cache_dir():
    """Where the synthetic model folder is kept between runs."""
    return Path(os.environ.get("QKALIGN_CACHE", Path.home() / ".cache" / "qkalign")) / "measure-bench"


def write_qwen3_folder(spec, folder):
    """The weights of ``spec`` as a Qwen3 folder: config.json + model.safetensors (bfloat16)."""
    import torch
    from safetensors.torch import save_file

    w_q, w_k = make_weights(spec)
    L, H, d, n = w_q.shape
    tensors = {}
    for layer in range(L):
        prefix = f"model.layers.{layer}."
        tensors[prefix + "self_attn.q_proj.weight"] = torch.from_numpy(w_q[layer].reshape(H * d, n)).bfloat16()
        tensors[prefix + "self_attn.k_proj.weight"] = torch.from_numpy(w_k[layer].reshape(-1, n)).bfloat16()
        tensors[prefix + "input_layernorm.weight"] = torch.ones(n, dtype=torch.bfloat16)
        tensors[prefix + "self_attn.q_norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
        tensors[prefix + "self_attn.k_norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.partial"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    config = {"model_type": "qwen3", "num_hidden_layers": L, "num_attention_heads": H,
              "num_key_value_heads": spec.num_kv_heads, "head_dim": d, "hidden_size": n}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tmp.rename(folder / "model.safetensors")  # last: a crash never leaves a half-written cache


@pytest.fixture(scope="module")
def model_dir():
    spec = PRESETS[PRESET]
    folder = cache_dir() / f"{PRESET}-bf16-seed{spec.seed}-drift{spec.drift}"
    if not (folder / "model.safetensors").exists():
        write_qwen3_folder(spec, folder)
    return folder


def _rss_bytes():
    """(anonymous RSS, file-backed RSS) of this process, from /proc (Linux)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024
    return fields.get("RssAnon", 0), fields.get("RssFile", 0)


class PeakMemory:
    """Samples anonymous RSS (memory beyond the memory-mapped file) every 10 ms while active."""

    def __enter__(self):
        self.base = _rss_bytes()[0]
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_bytes()[0])

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes()[0])

    @property
    def beyond_start(self):
        return self.peak - self.base


def sgemm_rate(size=4096, inner=2560, repeats=3):
    """Best float32 GEMM rate (flop/s) of ``(size, inner) @ (inner, size)`` over ``repeats`` runs."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, inner), dtype=np.float32)
    b = rng.standard_normal((inner, size), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size * size * inner / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flop_counts(spec):
    """``(issue_count, actual_count)`` in flops (2 per multiply-add) for measuring ``spec``."""
    L, H, Hkv, d, n, k = (spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                          spec.hidden_size, spec.topk)
    issue = 2.0 * H * (L * d) ** 2 * n
    syrks = (H + Hkv) * (L * d) * (L * d + 1) * n  # X X^T on the lower triangle only
    actual = syrks + 2.0 * H * L * d * d * n + 2.0 * H * L * 2 * d * k * n
    return issue, actual


def test_measure_vs_sgemm(model_dir, benchmark):
    from qkalign.measurement import measure

    spec = PRESETS[PRESET]
    load_before = os.getloadavg()
    rate_before = sgemm_rate()
    with PeakMemory() as memory:
        data = benchmark.pedantic(measure, args=(model_dir,), kwargs=dict(topk=spec.topk, progress=False),
                                  rounds=1, iterations=1)
    seconds = benchmark.stats.stats.max
    rate_after = sgemm_rate()
    rate = max(rate_before, rate_after)
    issue_flops, actual_flops = flop_counts(spec)
    issue_ratio = seconds / (issue_flops / rate)
    actual_ratio = seconds / (actual_flops / rate)
    print(f"\nmeasure {PRESET}: {seconds:.2f} s; load average before {load_before[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"SGEMM rate: {rate / 1e9:.0f} GFlop/s (before {rate_before / 1e9:.0f}, after {rate_after / 1e9:.0f})")
    print(f"issue's flop count H (L d)^2 n MACs = {issue_flops / 1e12:.2f} TFlop: SGEMM {issue_flops / rate:.2f} s, "
          f"measure/SGEMM = {issue_ratio:.2f} (target <= {TIME_RATIO_TARGET})")
    print(f"flops measure does = {actual_flops / 1e12:.2f} TFlop: SGEMM {actual_flops / rate:.2f} s, "
          f"measure/SGEMM = {actual_ratio:.2f}")
    print(f"peak memory beyond the memory-mapped file: {memory.beyond_start / 2**30:.2f} GiB "
          f"(target <= {MEMORY_TARGET_BYTES / 2**30:.0f} GiB)")
    benchmark.extra_info.update(seconds=seconds, sgemm_gflops=rate / 1e9, issue_ratio=issue_ratio,
                                actual_ratio=actual_ratio, peak_bytes_beyond_file=memory.beyond_start,
                                load_average=load_before[0])
    assert data.gram.shape == (spec.num_layers, spec.num_layers, spec.num_heads)
    assert memory.beyond_start <= MEMORY_TARGET_BYTES
    assert issue_ratio <= TIME_RATIO_TARGET
