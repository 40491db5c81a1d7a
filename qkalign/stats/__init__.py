""":class:`~qkalign.QKData` -> every number of the report.

- ``analyze``: :func:`~qkalign.stats.analyze.analyze`, the report's numbers step by step;
- ``result``: :class:`~qkalign.stats.result.AnalysisResult` and its JSON form;
- ``reference``: the numpy reference, the definition of every number;
- ``backends``: the reference or the Numba kernels (``qkalign.kernels``), same functions;
- ``all_pairs``: every statistic for all layer pairs, and its profile over layer distance;
- ``chance``: the level of each statistic for unrelated operators of the same shape;
- ``head_matching``: heads paired across layers by their best assignment.

The default seed of the Monte Carlo chance levels is here, where the CLI reads it without
importing the statistics.
"""

#: Seed of the Monte Carlo chance levels unless one is given (recorded in the result).
DEFAULT_CHANCE_SEED = 20261126
