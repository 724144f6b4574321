"""The one base of every error whose message tells the user what to do: the command line prints
it without a traceback (exit 2). Importing this module imports nothing else."""


class PipelineError(Exception):
    """An error for the user: one line naming the file, key or value, and what to do."""
