"""Notifications: push and SMS through a provider chosen per channel, sent at most once.

- ``services.py``: ``notification_send`` (validate, record, enqueue in the caller's transaction)
  and ``notification_deliver`` (the send itself, run by the worker, tested without a broker);
- ``providers.py``: the provider interface, Twilio's SMS API over httpx, and a console provider
  for development;
- ``tasks.py``: ``tasks.notifications.deliver``, on the ``email`` queue (config/queues.py);
- ``models.py``, ``admin.py``: one ``Notification`` row per message, with what happened to it;
- ``conf.py``: the family's settings, with defaults.
"""
