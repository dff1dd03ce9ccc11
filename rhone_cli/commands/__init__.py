"""One module per noun. Each command is thin: parse options, call a service function, render through `Output`.

Command modules import only typer, the standard library and light rhone modules at top level (start-up budget). They
never import each other (what two share lives in `_common`, `_options` or `rhone_cli/render/`); `rhone_cli/main.py`
assembles them into the command tree.
"""
