"""Operations by kind: what each kind checks when the request arrives (importable by the API: these modules depend
on the domain, the store and the narrow interfaces of `rhone_local/ports.py` only, never on an engine, the runner,
the pipeline or the edge).
"""
