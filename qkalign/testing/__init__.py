"""Test support shared by ``tests/`` and ``benchmarks/`` (not used by qkalign itself).

- ``comparisons``: the table of every Numba kernel beside its numpy reference, and random inputs;
- ``dense``: the dense float64 constructions (``g = K^T Q`` as an n x n matrix) that the
  factored computations are checked against;
- ``model_folders``: tiny Hugging Face model folders of every layout ``measure`` reads;
- ``processes``: fresh Python processes with this checkout on the path (the CLI end to end,
  the seed script, timed snippets).
"""
