"""When compiling pays: the climb of plain ``%%pyrojit`` and ``--auto``.

Every decision to run a step eager, on Pyro's JIT, on the whole step or on inductor's kernels is
taken in :mod:`.auto`, from the figures :mod:`.books` keeps and the step counts :mod:`.loops`
reads in the cell. Nothing here runs a step or imports torch.
"""
