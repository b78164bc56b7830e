"""Trusted Spark: the encrypted ``ppml`` data source, the secure session, ``ppml submit``."""
