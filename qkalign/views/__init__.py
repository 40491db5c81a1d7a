"""What a person sees: every view of a result, each in its own module, fed by the result objects alone.

- :mod:`.text_report`: the text report (the seed's sections, then qkalign's);
- :mod:`.analysis_figures`: the PNG figures of one analysis (heatmaps, to-anchor panels), with
  :mod:`.rope_figures` and :mod:`.symmetry_figures` for the rotary and symmetry statistics, and
  :mod:`.figure_files` for what they share;
- :mod:`.sweep_figures`: the figures of a sweep's store (statistics against the training step).

Nothing here computes a statistic: the numbers come from :class:`~qkalign.stats.result.AnalysisResult`
(or its JSON form) and from a sweep's dataset. Plotting libraries are imported on first use only.
"""
