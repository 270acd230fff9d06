"""Email in the background: one templated email (``services.email_send``) or many
(``bulk.bulk_start``), through Django's email backend, on the ``email`` queue."""
