"""The shared catalog (issue 16, DESIGN §16): one PostgreSQL database that
several machines' mounts share, each keeping its SQLite catalog as a replica.

``schema`` (tables and migrations), ``connect`` (URL, credentials, errors),
``store`` (`SharedCatalog`: writes, each one transaction recording its
changes), ``feed`` (the change feed applied to a replica; a new replica's
bootstrap) and ``locks`` (one scanner per origin). See docs/shared-catalog.md.

Nothing is imported here: psycopg is loaded only by a process that uses a
shared catalog (a mount of a million tracks without one must not pay for it).
"""
