"""The operator: turns each ExportRequest into exactly one Kubernetes Job and reports back.

Layout, from pure to effectful:

- :mod:`~exportd.operator.jobs`: the Job manifest planned from a request, and a Job read back;
- :mod:`~exportd.operator.admission`: who may start now (N cluster-wide, M per requester, FIFO);
- :mod:`~exportd.operator.reconcile`: one reconcile round as a pure function of all requests and
  Jobs: the Jobs to create or delete and the status patches to write;
- :mod:`~exportd.operator.kube`: the few API calls, with their errors classified;
- :mod:`~exportd.operator.controller`: runs rounds (coalesced, serialized, periodic resync);
- :mod:`~exportd.operator.handlers`: thin kopf handlers that wake the controller, and kopf's
  settings; :mod:`~exportd.operator.main` registers them for ``kopf run``.
"""
