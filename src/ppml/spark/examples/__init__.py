"""Example jobs (SimpleQuery), runnable with ``ppml submit`` or ``ppml example``."""
