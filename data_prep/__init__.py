"""Raw Criteo logs -> Parquet shards + ``manifest.json`` (``dlrm-scale prep criteo``), and synthetic raw logs.

Modules, in the order data flows through them: ``layout`` (what an input file looks like), ``chunks`` (files cut
into parallel units, read as line-aligned blocks), ``parse`` + ``hexids`` (blocks -> validated arrays, bad
lines), ``transform`` and ``vocab`` (dense transform, hash/vocab ids), ``shards`` (crash-safe Parquet writing),
``splits`` (train/val/test conventions), ``tasks``/``execute``/``pipeline`` (the phases, fanned out over
processes and ranks), ``state`` (the resumable bookkeeping), ``finalize`` (the manifest), ``cli``.
``synth`` writes synthetic logs in the raw layout.
"""
