"""The lab: what measures the pipeline rather than runs it. The landscape simulator behind ``make demo``
and the tests, the scoring against simulated truth (``evaluate``, ``accuracy``: ``make evaluate``), the
checks on real Sentinel-2 samples (``realdata``: ``make realdata``) and the benchmark (``bench``:
``make bench``). The product (``pipeline``) never imports from here except for the demo and the
``evaluate`` command."""
