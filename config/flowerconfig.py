"""Flower's configuration file, passed by ``bin/flower`` with ``--conf``: /metrics behind the login.

Flower 2.2 serves ``/metrics`` to anyone, whatever login its pages require: its documentation
("Authentication") lists ``/healthcheck`` and ``/metrics`` as exempt, and flower#1342, asking for
the login there too, was closed without it. The page names every task and worker, with how often
each failed: nothing for the internet to read. Here ``/metrics`` takes the same login as Flower's
pages (tornado's ``authenticated``, as they use), so Prometheus scrapes it with the basic-auth
login in its scrape config (README, "Flower"). ``/healthcheck`` stays open: it says "OK" and
nothing else, for load balancers and container health checks.

Flower executes this file once at start (tornado's ``parse_config_file``). A top-level name here
that matches a Flower option would set that option, so this file defines none: the options are
all on bin/flower's command line.
"""

from flower.views import monitor
from tornado.web import authenticated

monitor.Metrics.get = authenticated(monitor.Metrics.get)
