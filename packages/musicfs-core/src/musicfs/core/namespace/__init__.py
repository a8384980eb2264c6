"""Every entry the mount shows, by inode (`namespace.Namespace`): the catalog
tree, virtual folders (`.search`, `.collections`, the `.prefetch` mirror),
smart collections and cover files. The inode ranges are `inodes`'.
"""
