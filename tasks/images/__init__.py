"""The images family: resized, converted and optimised variants of uploaded images, one job
per image on the ``images`` queue (the CPU worker), and batches with a callback.

- ``services.py``: the logic: check an untrusted file, decode once, write each variant;
- ``tasks.py``: ``tasks.images.process`` (tracked: its result maps each variant to its file);
- ``api.py``: ``POST /api/images/``, an upload or a path in storage, answered 202;
- ``conf.py``: the variants and the limits on sources.

Delete this folder and the project still starts (it has no tables).
"""
