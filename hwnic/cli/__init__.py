"""The ``hwnic`` command: one module per subcommand group, each with ``register``."""
