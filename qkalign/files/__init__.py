"""The files a run reads and writes.

- ``seed_format``: the seed's pair, ``PREFIX.json`` (grams) + the eigen-directions file
  (:func:`~qkalign.files.seed_format.load`, :func:`~qkalign.files.seed_format.save`);
- ``eigdirs``: the eigen-directions file itself, native safetensors or the seed's ``.pt``
  (read without running pickled code);
- ``outputs``: every output whole or not at all (paths checked before the work, atomic renames).
"""
