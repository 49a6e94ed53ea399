"""Bindings of the contexts' ports: the same ports, bound in process or over HTTP.

A context declares what it needs from another as a port (``shop/<context>/ports.py``). A
deployable binds each port to whichever adapter fits where the other context lives now:

- ``bindings.inprocess``: a call into the other context's service functions on the same
  database (the monolith, or any process that serves both contexts);
- ``bindings.http``: a call to the other context's internal API in another process, through
  a resilient :class:`shop.kernel.http.Upstream`.

Moving a context out of the monolith changes the binding, never the context's code.
"""
