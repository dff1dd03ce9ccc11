"""Rhone Local: the single-machine Rhone control plane (started with `rhone local up`).

The server itself arrives with the next milestone; the package exists so the distribution layout is final.
"""
