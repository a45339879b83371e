"""The one exception preprocessing raises for bad input or arguments."""


class PrepError(Exception):
    """Bad input, bad arguments or an unusable output directory. The message names the file, line and field
    where there is one; ``dlrm-scale prep`` prints it and exits with status 2 (a user error, as in every command)."""
