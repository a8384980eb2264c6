"""Tests of the shared catalog on PostgreSQL (issue 16)."""
