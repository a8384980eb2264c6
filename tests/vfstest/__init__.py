"""The namespace's behaviour cases, shared by the in-process suite and the mount suite."""
