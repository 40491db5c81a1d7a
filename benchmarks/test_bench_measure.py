"""``qkalign measure`` on the qwen3-4b synthetic preset and a 24-layer shape, against the machine's own SGEMM.

Run: ``python -m pytest benchmarks/test_bench_measure.py -s`` (``-s`` shows the summary lines).

Each model's weights are written once as a Qwen3-style Hugging Face folder (bfloat16,
only the tensors measure reads) to the benchmark cache (``conftest.cache_dir``): the
qwen3-4b preset, and the shape of the model in issue 21.7 (24 layers, 16 heads, 4 kv heads,
head_dim 128, hidden 2048), whose small 2d x 2d eigen-problems weigh more against its SYRKs.
One run of each then times, side by side:

- ``measure`` on that folder (float32 mode, no progress bar), its peak memory (RSS
  beyond the memory-mapped weight file, sampled) and wall time;
- the machine's SGEMM doing the issue's flop count, ``H (L d)^2 n`` multiply-adds (the Q
  Grams as plain GEMMs), before, between and after the measure rounds
  (``QKALIGN_BENCH_ROUNDS``, default 2). Best wall time against best wall time; CPU times
  (all threads) are printed too: they hardly move when other processes share the cores.

Targets: measure <= 1.5x that SGEMM time at qwen3-4b, <= 1.3x at the 24-layer shape (issue 21.7),
and <= 3 GB of memory beyond the file. The arithmetic measure actually does (SYRKs of Q and K,
``K Q^T``, eigenvectors) is printed too.
"""

import json
import os
import threading
import time

import numpy as np
import pytest
from conftest import PRESET, SMOKE, cache_dir

from qkalign.weights.synthetic import PRESETS, SyntheticSpec, make_weights

TIME_RATIO_TARGET = 1.5
MEMORY_TARGET_BYTES = 3 * 2**30
#: The shape of issue 21.7's model (measure took 1.87x SGEMM there), and its target.
SHAPE_24_LAYERS = SyntheticSpec(24, 16, 4, 128, 2048, topk=16, drift=0.1)
TIME_RATIO_TARGET_24_LAYERS = 1.3


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


def cached_folder(tmp_path_factory, name, spec):
    """The bf16 folder of ``spec`` in the benchmark cache (a temporary folder for a smoke run), written if missing."""
    root = tmp_path_factory.mktemp("measure-bench") if SMOKE else cache_dir() / "measure-bench"
    folder = root / f"{name}-bf16-seed{spec.seed}-drift{spec.drift}"
    if not (folder / "model.safetensors").exists():
        write_qwen3_folder(spec, folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return cached_folder(tmp_path_factory, PRESET, PRESETS[PRESET])


@pytest.fixture(scope="module")
def model_dir_24_layers(tmp_path_factory):
    """The 24-layer shape (the small preset in a smoke run)."""
    if SMOKE:
        return cached_folder(tmp_path_factory, PRESET, PRESETS[PRESET])
    return cached_folder(tmp_path_factory, "24-layer", SHAPE_24_LAYERS)


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


def sgemm_seconds(spec):
    """(wall, CPU) seconds of the machine's SGEMM (numpy, all BLAS threads) for the issue's flop count.

    ``H`` products ``(L d, n) @ (n, L d)``: exactly ``H (L d)^2 n`` multiply-adds, the Q Grams
    computed as plain GEMMs. Timing the whole count (not a rate from one short product)
    exposes SGEMM to the same machine load as measure.
    """
    rng = np.random.default_rng(0)
    rows = spec.num_layers * spec.head_dim
    a = rng.standard_normal((rows, spec.hidden_size), dtype=np.float32)
    b = rng.standard_normal((spec.hidden_size, rows), dtype=np.float32)
    out = np.empty((rows, rows), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm up the BLAS threads
    return _wall_and_cpu(lambda: [np.matmul(a, b, out=out) for _ in range(spec.num_heads)])[1:]


def _wall_and_cpu(fn):
    """(result, wall seconds, CPU seconds of all this process's threads) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def flop_counts(spec):
    """``(issue_count, actual_count)`` in flops (2 per multiply-add) for measuring ``spec``."""
    L, H, Hkv, d, n, k = (spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                          spec.hidden_size, spec.topk)
    issue = 2.0 * H * (L * d) ** 2 * n
    syrks = (H + Hkv) * (L * d) * (L * d + 1) * n  # X X^T on the lower triangle only
    actual = syrks + 2.0 * H * L * d * d * n + 2.0 * H * L * 2 * d * k * n
    return issue, actual


def test_measure_vs_sgemm(model_dir, benchmark):
    """The qwen3-4b preset: SGEMM, measure, SGEMM, measure, ..., SGEMM; the best of each against each other."""
    measure_against_sgemm(model_dir, PRESET, PRESETS[PRESET], benchmark, TIME_RATIO_TARGET)


def test_measure_vs_sgemm_24_layers(model_dir_24_layers, benchmark):
    """The same at the 24-layer shape of issue 21.7."""
    name, spec = (PRESET, PRESETS[PRESET]) if SMOKE else ("24-layer", SHAPE_24_LAYERS)
    measure_against_sgemm(model_dir_24_layers, name, spec, benchmark, TIME_RATIO_TARGET_24_LAYERS)


def measure_against_sgemm(model_dir, name, spec, benchmark, ratio_target):
    """SGEMM, measure, SGEMM, measure, ..., SGEMM on ``spec``'s folder: the best of each against each other.

    Also each round against the better of the SGEMMs beside it, whose median (the first round left
    out when there are more: it pays for importing torch and scipy and loading the numba kernels)
    moves less with the load of other processes than a ratio of minima taken minutes apart.
    """
    from qkalign.weights.measure import measure

    rounds = 1 if SMOKE else int(os.environ.get("QKALIGN_BENCH_ROUNDS", "2"))
    load = [os.getloadavg()[0]]
    sgemm, runs = [], []

    def run_measure():
        with PeakMemory() as memory:
            data, wall, cpu = _wall_and_cpu(lambda: measure(model_dir, topk=spec.topk, progress=False))
        runs.append((wall, cpu, memory.beyond_start))
        return data

    def sgemm_first():  # pytest-benchmark's setup hook runs before every round
        sgemm.append(sgemm_seconds(spec))
        load.append(os.getloadavg()[0])

    data = benchmark.pedantic(run_measure, setup=sgemm_first, rounds=rounds, iterations=1)
    sgemm.append(sgemm_seconds(spec))
    load.append(os.getloadavg()[0])
    issue_flops, actual_flops = flop_counts(spec)
    sgemm_wall, sgemm_cpu = min(w for w, _ in sgemm), min(c for _, c in sgemm)
    wall, cpu, peak = min(w for w, _, _ in runs), min(c for _, c, _ in runs), max(p for _, _, p in runs)
    round_ratios = [w / min(sgemm[i][0], sgemm[i + 1][0]) for i, (w, _, _) in enumerate(runs)]
    warm_ratios = round_ratios[1:] or round_ratios
    print(f"\nload average (1 min) along the run: {', '.join(f'{x:.2f}' for x in load)} on {os.cpu_count()} cores")
    print(f"SGEMM for the issue's count H (L d)^2 n MACs = {issue_flops / 1e12:.2f} TFlop: wall "
          + ", ".join(f"{w:.2f}" for w, _ in sgemm) + f" s (best {issue_flops / sgemm_wall / 1e9:.0f} GFlop/s); "
          f"CPU best {sgemm_cpu:.2f} s")
    print(f"measure {name}: wall " + ", ".join(f"{w:.2f}" for w, _, _ in runs)
          + f" s; CPU best {cpu:.2f} s")
    print(f"measure / SGEMM: wall {wall / sgemm_wall:.2f} (target <= {ratio_target}), CPU {cpu / sgemm_cpu:.2f}; "
          f"each round against the SGEMMs beside it: {', '.join(f'{r:.2f}' for r in round_ratios)} "
          f"(median after the first {float(np.median(warm_ratios)):.2f})")
    print(f"flops measure does = {actual_flops / 1e12:.2f} TFlop (SYRKs of Q and K, K Q^T, eigenvectors): "
          f"measure / SGEMM for that count: wall {wall / (sgemm_wall * actual_flops / issue_flops):.2f}")
    print(f"peak memory beyond the memory-mapped file: {peak / 2**30:.2f} GiB "
          f"(target <= {MEMORY_TARGET_BYTES / 2**30:.0f} GiB)")
    benchmark.extra_info.update(measure_wall=[w for w, _, _ in runs], measure_cpu=[c for _, c, _ in runs],
                                sgemm_wall=[w for w, _ in sgemm], sgemm_cpu=[c for _, c in sgemm],
                                ratio_wall=wall / sgemm_wall, ratio_cpu=cpu / sgemm_cpu, ratio_wall_rounds=round_ratios,
                                ratio_wall_median=float(np.median(warm_ratios)),
                                peak_bytes_beyond_file=peak, load_average=load)
    assert data.gram.shape == (spec.num_layers, spec.num_layers, spec.num_heads)
    if not SMOKE:  # a tiny preset's times say nothing about the targets
        assert peak <= MEMORY_TARGET_BYTES
        assert wall <= ratio_target * sgemm_wall


#: Issue 23.7: the default measure, with the rotary profile, against measure without it.
WINDOW_RATIO_TARGET = 1.2  # --operator window:W against raw (issue 23.7)
PROFILE_RATIO_TARGET = 1.3


def alternated_walls(model_dir, rounds, baseline, option):
    """Walls (s) of ``measure(model_dir, **baseline)`` and ``measure(model_dir, **option)`` run alternately
    ``rounds`` times each (after one warm-up run), and the last ``option`` run's result."""
    from qkalign.weights.measure import measure

    topk = PRESETS[PRESET].topk
    measure(model_dir, topk=topk, progress=False, **baseline)  # loads the kernels, maps the file
    off, on, data = [], [], None
    for _ in range(rounds):
        for times, kwargs in ((off, baseline), (on, option)):
            start = time.perf_counter()
            data = measure(model_dir, topk=topk, progress=False, **kwargs)
            times.append(time.perf_counter() - start)
    return off, on, data


def _ratio_line(what, off, on, target):
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(off, on))
    return (f"\nmeasure {PRESET} {what}: " + ", ".join(f"{t:.2f}" for t in off) + " s against "
            + ", ".join(f"{t:.2f}" for t in on) + f" s; best/best {min(on) / min(off):.2f} (target <= {target}), "
            f"pairs {pairs}")


def test_measure_profile_cost(model_dir):
    """measure with its default rotary profile (0 and the powers of two up to Qwen3's 32768 positions: 17
    distances) against measure without one (``deltas=()``), alternated, on the qwen3-4b folder: the ratio of
    the best walls, and the ratio of each pair of neighbouring runs."""
    rounds = 1 if SMOKE else int(os.environ.get("QKALIGN_BENCH_ROUNDS", "2"))
    off, on, data = alternated_walls(model_dir, rounds, {"deltas": ()}, {"deltas": None})
    distances = len(data.extra["rope_profile"]["deltas"])
    print(_ratio_line(f"without the profile, then with {distances} distances", off, on, PROFILE_RATIO_TARGET))
    if not SMOKE:
        assert min(on) <= PROFILE_RATIO_TARGET * min(off)


def test_measure_window_operator_cost(model_dir):
    """``--operator window:W`` (W = 4096, the mean of g(0..4095)) against ``raw``, both without a profile,
    alternated on the qwen3-4b folder (issue 23.7: <= 1.2x)."""
    rounds = 1 if SMOKE else int(os.environ.get("QKALIGN_BENCH_ROUNDS", "2"))
    off, on, data = alternated_walls(model_dir, rounds, {"deltas": ()}, {"deltas": (), "operator": "window:4096"})
    assert data.extra["operator"] == "window:4096"
    print(_ratio_line("raw, then window:4096", off, on, WINDOW_RATIO_TARGET))
    if not SMOKE:
        assert min(on) <= WINDOW_RATIO_TARGET * min(off)


#: Issue 24.7: ``symmetry_split=True`` against the default measure; above it the split stays an option (off by
#: default), which it is: one more (L d)^2 n GEMM per query head beside the SYRKs.
SYMMETRY_SPLIT_RATIO_TARGET = 1.3


def test_measure_symmetry_split_cost(model_dir):
    """measure with ``symmetry_split=True`` (``gram_transpose``: X = Q K^T per query head and its block sums) against
    without, both without a profile, alternated on the qwen3-4b folder. The ratio is printed against issue 24.7's
    1.3x, not asserted: the split is an option because it costs more."""
    rounds = 1 if SMOKE else int(os.environ.get("QKALIGN_BENCH_ROUNDS", "2"))
    off, on, data = alternated_walls(model_dir, rounds, {"deltas": ()}, {"deltas": (), "symmetry_split": True})
    spec = PRESETS[PRESET]
    assert np.shape(data.extra["gram_transpose"]) == (spec.num_layers, spec.num_layers, spec.num_heads)
    L, H, Hkv, d, n = spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.hidden_size
    syrks, product = (H + Hkv) * (L * d) ** 2 * n / 2, H * (L * d) ** 2 * n
    print(_ratio_line("without the symmetry split, then with it", off, on, SYMMETRY_SPLIT_RATIO_TARGET)
          + f"; the GEMMs add {product / syrks:.2f}x the SYRKs' multiply-adds (an option: off by default)")


#: Issue 24 point 7: the layers' whole-operator scores should be (nearly) free at measure time.
LAYER_SYMMETRY_RATIO_TARGET = 1.1


def test_measure_layer_symmetry_cost(model_dir):
    """measure with ``layer_symmetry=True`` (Saponati et al.'s per-layer symmetry and directionality: one
    ``(n, H_kv d) x (H_kv d, n)`` product a layer and its sums, from the blocks the head tasks read) against without,
    both without a profile, alternated on the qwen3-4b folder; wall and CPU (all threads) of each run. The ratio is
    printed against issue 24.7's target, not asserted: the product alone is ``n / (L d) (H_kv / (H + H_kv))`` of the
    SYRKs' multiply-adds (0.22x at qwen3-4b) at a GEMM's better rate."""
    from qkalign.weights.measure import measure

    rounds = 1 if SMOKE else int(os.environ.get("QKALIGN_BENCH_ROUNDS", "2"))
    topk = PRESETS[PRESET].topk
    baseline, option = {"deltas": ()}, {"deltas": (), "layer_symmetry": True}
    measure(model_dir, topk=topk, progress=False, **option)  # loads the kernels, maps the file
    runs = {"off": [], "on": []}
    data = None
    for _ in range(rounds):
        for key, kwargs in (("off", baseline), ("on", option)):
            data, wall, cpu = _wall_and_cpu(lambda kwargs=kwargs: measure(model_dir, topk=topk, progress=False,
                                                                          **kwargs))
            runs[key].append((wall, cpu))
    spec = PRESETS[PRESET]
    assert np.shape(data.extra["symmetry"]["per_layer"]) == (spec.num_layers,)
    off, on = [w for w, _ in runs["off"]], [w for w, _ in runs["on"]]
    cpu_off, cpu_on = min(c for _, c in runs["off"]), min(c for _, c in runs["on"])
    L, H, Hkv, d, n = spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.hidden_size
    syrks, product = (H + Hkv) * (L * d) ** 2 * n / 2, L * Hkv * d * n * n
    print(_ratio_line("without the layer scores, then with them", off, on, LAYER_SYMMETRY_RATIO_TARGET)
          + f"; CPU best {cpu_off:.2f} s against {cpu_on:.2f} s ({cpu_on / cpu_off:.2f}); the layer products add "
          f"{product / syrks:.2f}x the SYRKs' multiply-adds; load average (1 min) {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores")
