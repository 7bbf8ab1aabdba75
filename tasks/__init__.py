"""Task packages, installed as ``s2s_tasks.tasks``: each one a head, a datamodule and sample data."""
