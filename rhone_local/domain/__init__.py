"""The domain core of Rhone Local: roles and permissions, operation state machines, identifiers.

Pure code: no I/O, no database, no HTTP. The API, store and workers call into it; it calls nothing back.
"""
