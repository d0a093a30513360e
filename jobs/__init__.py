"""The entry scripts (`python jobs/train.py ...`), importable as modules too (`from jobs import train`)."""
