"""Service functions: what commands do, without parsing or rendering. One module per noun."""
