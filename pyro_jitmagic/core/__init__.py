"""The core: everything that runs, and nothing that shows.

It intercepts Pyro's inference while a run is active, compiles it through a
compiler behind one seam (:mod:`.compilers`), decides what pays (``--auto``,
the executor tiers), saves and restores state for ``--compare``, and records
what happened as :mod:`pyro_jitmagic.records`. Nothing here imports IPython or
a view; torch and Pyro are imported when a run starts.
"""
