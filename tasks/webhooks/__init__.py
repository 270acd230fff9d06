"""Webhooks, as the Standard Webhooks specification (https://www.standardwebhooks.com/) has them.

- ``models.py``: ``Endpoint`` (a subscriber's URL, secrets, event types), ``Delivery`` (one
  message to one endpoint, its id stable across retries) and ``DeliveryAttempt`` (the log);
- ``services.py``: ``webhook_send`` (in the caller's transaction), ``webhook_sign`` and
  ``delivery_attempt`` (one signed POST through the engine's URL guard, classified);
- ``tasks.py``: ``tasks.webhooks.deliver``, on the ``api`` queue, retried with backoff;
- ``admin.py``: endpoints, and the delivery log with each attempt.
"""
