"""Preference store: ORM, queries, bulk ingest, migrations."""
