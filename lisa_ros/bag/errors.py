"""The bag tools' one exception type."""


class EvalError(Exception):
    """A problem with the inputs (bag, topics, script, output): the CLI reports it with exit code 2."""
