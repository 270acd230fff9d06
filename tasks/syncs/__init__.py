"""API syncs: page through a remote JSON API and upsert its records into a model, resumably.

- ``registry.py``: ``Sync`` (how to fetch a page, map a record, which model and key to upsert
  by), the pagination kinds (``PageNumbers``, ``Offsets``, ``Cursors``) and ``SYNCS``, the
  declared syncs, with the example ``contacts``;
- ``services.py``: the logic: the lease that keeps two runs of a sync apart, the checkpoint
  written with each page, the shared rate limit, the fan-out into page ranges;
- ``tasks.py``: ``tasks.syncs.run`` (one run), ``tasks.syncs.part`` (a page range of a
  fanned-out run) and ``tasks.syncs.finish`` (the fan-out's final callback), on the ``api`` queue;
- ``api.py``: ``POST /api/syncs/`` with ``{"sync": name}``.
"""
