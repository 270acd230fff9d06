"""The example family: the shapes every family follows, small enough to read in one sitting.

- ``services.py``: the logic, as plain keyword-only functions that tests call without a broker;
- ``tasks.py``: thin Celery tasks that call them (``tasks.example.*``, on ``default``);
- ``models.py``, ``admin.py``, ``migrations/``: the table the idempotent job writes to;
- ``api.py``: ``POST /api/example/demo/``, which enqueues a tracked job (DEBUG only);
- ``conf.py``: the family's settings, with defaults.

Delete this folder (after ``manage.py migrate example zero``) and the project still starts.
"""
