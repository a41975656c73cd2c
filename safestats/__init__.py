"""SafeStats core: configuration, the embedded PostgreSQL cluster, the command line and the query layer.

The data flows loaders/ (read a supplier drop, validate, harmonise) -> PostGIS (db/) -> the query layer
(safestats.queries, the one place that turns a filter state and a user into SQL) -> dashapp/callbacks ->
dashapp/layouts. This package holds the pieces every layer shares.
"""
