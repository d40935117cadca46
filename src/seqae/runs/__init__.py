"""Run folders, resuming, distributed runs and the console."""
