"""diffsolve.tasks."""
