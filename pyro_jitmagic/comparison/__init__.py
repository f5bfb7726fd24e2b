"""``%%pyrojit --compare``: the cell run eager then compiled from the same start, and the verdict.

:mod:`.twice` runs the two halves, :mod:`.state` saves and restores what a cell
can change between them, :mod:`.trail` follows the params, and :mod:`.verdict`
judges the two runs.
"""
