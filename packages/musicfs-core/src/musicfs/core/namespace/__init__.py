"""What the mount shows beyond the catalog tree: virtual folders (`.search`,
`.collections`), smart collections, and cover files.
"""
