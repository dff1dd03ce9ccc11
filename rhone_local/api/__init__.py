"""The HTTP API of Rhone Local (FastAPI). The wire contract lives in `models.py` → `schemas/openapi.json`."""
