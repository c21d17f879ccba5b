"""The one exception type for mistakes a user can fix: the CLI prints it as a single line and exits 2."""


class UserError(ValueError):
    """A problem in the user's input (data, config, paths), with a one-line message that says what to fix."""
