"""What a run writes and how it is read back: ``files`` (results.json/csv, summary.md, plots, the index; the
``python -m bench.report`` re-render), ``tables`` and ``plots`` (what summary.md and the PNGs show), ``selection``
(which records they show) and ``load`` (reading a results.json). Kept empty so that ``bench.compare`` can load a run
without importing matplotlib or torch."""
