"""Test support shared by ``tests/`` and ``benchmarks/`` (not used by qkalign itself).

- ``comparisons``: the table of every Numba kernel beside its numpy reference, and random inputs;
- ``dense``: the dense float64 constructions (``g = K^T Q`` as an n x n matrix) that the
  factored computations are checked against;
- ``model_folders``: tiny Hugging Face model folders of every layout ``measure`` reads;
  ``quantized_folders``: FP8 and integer-quantised ones;
- ``gguf_files``: GGUF files written from tiny folders the way llama.cpp's converter writes them,
  with small Q4_K / Q6_K quantisers; ``quantization_errors``: the error model of GGUF's block formats;
- ``http_server``: an HTTP server on 127.0.0.1 that honours ``Range`` and counts what it sends;
  ``hub``: a fake Hugging Face Hub (cache snapshots and endpoint routes);
- ``processes``: fresh Python processes with this checkout on the path (the CLI end to end,
  the seed script, timed snippets);
- ``reports``: comparing reports with stored copies within a tolerance from the precision;
  ``refusals``: checks of one-line refusals.
"""
