"""The FUSE skin: pyfuse3 operations, inodes, handles and errnos, and the latency
of each operation.
"""
