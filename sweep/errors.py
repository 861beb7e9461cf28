"""The error every refusal raises (kept free of heavy imports: the CLI catches it before it
imports anything else)."""


class SpecError(ValueError):
    """A spec or output that cannot run; the CLI prints it and exits with status 2."""
