"""Configuration: `rhone.toml` (project config, `project.py`), profiles and credentials (`profiles.py`,
`credentials.py`). Nothing here talks to the network."""
