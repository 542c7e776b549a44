"""Files lipsyncd ships as package data: the example configuration (``config.example.toml``,
the project's ``config.toml``), printed by ``lipsyncd example-config``."""
