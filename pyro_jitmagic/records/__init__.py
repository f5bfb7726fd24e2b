"""The records: what a run, a comparison and the compile caches were, as plain data.

Frozen dataclasses of strings, numbers and tuples, so that they can be kept,
compared and pickled after the objects they describe are gone. Nothing here
imports torch, Pyro, IPython or a view: how a record shows (text, HTML, a
widget) is looked up in :mod:`.shown`'s registry, which
:mod:`pyro_jitmagic.display` fills.
"""
