"""Data for training: the prep contract and the loader.

- ``manifest``: ``manifest.json``, the contract between ``dlrm-scale prep`` and training;
- ``loader``: ``make_loader`` / ``table_sizes`` and the :class:`~dlrm_scale.data.loader.Loader` (start here);
- ``plan``: which rows each rank reads, in which order (pure functions);
- ``parquet`` / ``synthetic``: the two row sources (Parquet row groups, synthetic power-law blocks);
- ``arrow`` / ``columns``: Arrow tables to host columns, and host columns to a batch;
- ``prefetch``: background reading and assembly, host-to-device staging;
- ``batch``: the :class:`~dlrm_scale.data.batch.Batch` (TorchRec's, plus a padding mask).
"""
