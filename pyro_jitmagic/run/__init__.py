"""One run of a cell: what every compiler runs inside.

The run intercepts inference where it runs (:mod:`.svi`, :mod:`.direct`,
:mod:`.mcmc`), asks the run's compiler how each SVI, loss and MCMC run goes
through the seam (:mod:`.route`), times every step (:mod:`.steps`) and keeps
what the report is made from (:mod:`.recorder`). Around it: the warm-up that
compiling needs, the JIT's warnings, the advice on failures, and the session
that keeps compiled objects between cells.
"""
