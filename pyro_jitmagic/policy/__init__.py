"""When compiling pays: the climb of plain ``%%pyrojit`` and ``--auto``.

Every decision to run a step eager, on Pyro's JIT, on the whole step or on
inductor's kernels is taken here from measured step times and what the cell's
loops say (:mod:`.loops`); nothing here runs a step or imports torch.
"""
