"""The operations layer: running the plugin in production (``pip install odc-ndvi-plugin[ops]``).

``runconfig`` (the run config), ``commit`` + ``sink`` (each task one commit, local or S3),
``runner`` (odc-stats' TaskRunner with tasks in flight and per-task failures), ``sqs``
(messages as leases), ``gateway`` (dask-gateway clusters), ``secrets`` (redaction).
"""
