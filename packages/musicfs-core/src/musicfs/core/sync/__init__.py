"""Keeping the catalog in step with the origins: the scanner, watches and polls,
and scan progress for people.
"""
