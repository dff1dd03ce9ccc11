"""rhone: the command-line tool for Rhone Cloud and Rhone Local."""

__version__ = "0.2.0"
