"""The modular monolith: every context's router on one database, ports bound in process."""
