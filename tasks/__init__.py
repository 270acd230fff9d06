"""The task library: one module per domain. Workers import every module here (config/celery.py).

Add a job by adding a module (``python manage.py newtask NAME`` writes one with its test).
Its queue comes from ``config/queues.py`` ROUTES; its retry policy sits in its own decorator.
"""
