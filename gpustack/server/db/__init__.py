"""The database: tables, engine and migrations."""
