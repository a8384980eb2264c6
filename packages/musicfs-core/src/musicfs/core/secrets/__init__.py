"""Credentials: where passwords and tokens live, and redacting them from text."""
