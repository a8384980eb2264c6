"""The catalog: the SQLite database that is the source of truth for the tree (DESIGN §1-2).

`store` holds `Catalog`, made of one module per concern (`schema`, `tree`,
`tracks`, `overrides`, `plays`, `stats`, `settings`, `index`): no SQL runs on
the catalog outside this package. `templates` parses path templates;
`layout` turns a track's tags into its place in the tree; `search` parses
search queries. Nothing here does I/O on an origin or knows of FUSE.
"""
