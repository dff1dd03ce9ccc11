"""Artifacts: the file manifest and digest of a directory (`manifest`), and later their upload.

Standard library only, and nothing is imported here: commands import `rhone_cli.artifacts.manifest` inside the
function that needs it (start-up budget).
"""
