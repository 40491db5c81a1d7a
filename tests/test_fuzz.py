"""Property-based fuzzing of every file qkalign reads: the guarantee holds for any content.

For a safetensors header (of an eig-dirs file and of a model's weights), a model's
``config.json`` and a grams JSON, hypothesis writes mutated files and runs the command: it
either succeeds (exit 0) or refuses with exactly one ``qkalign: error:`` line and exit 2.
A traceback (any exception escaping the CLI), a hang or another exit code fails the test.

The default test command runs a fixed budget of examples per property; a longer run::

    QKALIGN_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py
"""

import contextlib
import io
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkalign.cli import main
from qkalign.files.seed_format import save
from qkalign.testing.model_folders import write_model
from qkalign.weights.synthetic import SyntheticSpec, make_qkdata

EXAMPLES = int(os.environ.get("QKALIGN_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: JSON values of every kind, small and extreme, as a hostile file would hold them.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8),
    st.integers(min_value=-3, max_value=70), st.integers(), st.sampled_from([0, -1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.5, -0.0, 1e308, 5e-324]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def run(*args):
    """``qkalign ARGS`` in this process: (exit code, stderr); any escaping exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def assert_guarantee(code, stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 0:
        assert not any(line.startswith("qkalign: error") for line in lines), stderr
        return
    assert code == 2 and len(lines) == 1 and lines[0].startswith("qkalign: error: "), (code, stderr)


def mutate(doc, data):
    """``doc`` with a few keys replaced by arbitrary JSON values, deleted, or added."""
    doc = dict(doc)
    keys = sorted(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        key = data.draw(st.sampled_from(keys))
        if action == "replace":
            doc[key] = data.draw(json_values)
        elif action == "delete":
            doc.pop(key, None)
        else:
            doc[data.draw(st.text(max_size=10))] = data.draw(json_values)
    return doc


# --- seed-format grams JSON -----------------------------------------------------------------------

GRAMS_DATA = make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3))


@FUZZ
@given(data=st.data())
def test_any_grams_json_is_a_result_or_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        json_path, _ = save(GRAMS_DATA, Path(tmp) / "m")
        doc = mutate(json.loads(json_path.read_text()), data)
        if data.draw(st.booleans()):  # a number deep inside an array
            gram = doc.get("gram")
            if isinstance(gram, list) and gram and isinstance(gram[0], list) and gram[0] and isinstance(gram[0][0], list) \
                    and gram[0][0]:  # a replaced gram may be [[[]]]
                gram[0][0][0] = data.draw(json_values)
        json_path.write_text(json.dumps(doc))
        assert_guarantee(*run("analyze", json_path, "--backend", "numpy"))


# --- safetensors headers --------------------------------------------------------------------------

def header_entry(data, shape):
    """A safetensors header entry, each field either right or arbitrary."""
    entry = {"dtype": data.draw(st.sampled_from(["F32", "F64", "F16", "BF16", "I8", "F8_E4M3", "bogus"]) | json_values),
             "shape": data.draw(st.just(list(shape)) | st.lists(st.integers(-2, 2**40), max_size=5) | json_values),
             "data_offsets": data.draw(st.lists(st.integers(-5, 2**62), min_size=2, max_size=2) | json_values)}
    for key in data.draw(st.lists(st.sampled_from(sorted(entry)), max_size=1)):
        del entry[key]
    return entry


def write_fuzzed_safetensors(path, data, names_shapes):
    """A safetensors file whose header is fuzzed (or arbitrary bytes), followed by some data bytes."""
    if data.draw(st.integers(0, 9)) == 0:
        raw_header = data.draw(st.binary(max_size=64))
    else:
        header = {name: header_entry(data, shape) for name, shape in names_shapes}
        if data.draw(st.booleans()):
            header["__metadata__"] = data.draw(json_values)
        raw_header = json.dumps(header).encode()
    declared = data.draw(st.just(len(raw_header)) | st.integers(0, 2**64 - 1))
    body = bytes(data.draw(st.integers(0, 4096)))
    path.write_bytes(struct.pack("<Q", declared) + raw_header + body)


@FUZZ
@given(data=st.data())
def test_any_eigdirs_safetensors_header_is_a_result_or_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        json_path, eig_path = save(GRAMS_DATA, Path(tmp) / "m")
        write_fuzzed_safetensors(eig_path, data, [("eig_dirs", (4, 2, 3, 16)), ("sym_eigs", (4, 2, 8))])
        assert_guarantee(*run("analyze", json_path, "--backend", "numpy"))


@FUZZ
@given(data=st.data())
def test_any_weights_header_is_a_result_or_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model(Path(tmp) / "model", "llama", shape=(2, 2, 1, 4, 8)).folder
        names = [(f"model.layers.{layer}.self_attn.{proj}_proj.weight", (rows, 8))
                 for layer in range(2) for proj, rows in (("q", 8), ("k", 4))]
        write_fuzzed_safetensors(folder / "model.safetensors", data, names)
        assert_guarantee(*run("measure", folder, "-o", Path(tmp) / "out", "--quiet", "--topk", "2"))


# --- config.json ----------------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), model_type=st.sampled_from(["llama", "qwen3", "gpt2", "bert", "phi3", "gemma3_text"]))
def test_any_config_is_a_result_or_one_line(data, model_type):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model(Path(tmp) / "model", model_type).folder
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(mutate(config, data)))
        code, stderr = run("measure", folder, "-o", Path(tmp) / "out", "--quiet", "--topk", "2",
                           *(["--fold-norms"] if data.draw(st.booleans()) else []))
        assert_guarantee(code, stderr)
        if code == 0:  # a result must be a whole, readable pair
            assert np.isfinite(json.loads((Path(tmp) / "out.json").read_text())["gram"]).all()
