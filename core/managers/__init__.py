"""Keel's managers: one file per manager, each a Flask extension."""
