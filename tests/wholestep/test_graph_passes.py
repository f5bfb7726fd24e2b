"""The passes over a captured graph before a backend compiles it (wholestep/capture.py)."""

import collections

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_jitmagic.wholestep.capture import prune, simplify


def _ops(graph):
    return collections.Counter(str(n.target) for n in graph.graph.nodes if n.op == "call_function")


def test_an_op_repeated_on_the_same_inputs_runs_once_and_nothing_else_merges():
    def step(x, y):
        twice = torch.neg(x) + torch.neg(x)  # merges
        signed = (x * 0.0, x * -0.0)  # not: 0.0 and -0.0 compare equal and differ
        draws = (torch.randn(3), torch.randn(3))  # not: each draw moves the random stream
        before = y.exp()
        y.view(-1).add_(1.0)
        after = y.exp()  # not: y was written between them (through a view)
        kept, written = x.clone(), x.clone()
        written.mul_(2.0)  # not: one of them is written
        return twice, *signed, *draws, before, after, kept, written

    x = torch.tensor([1.0, -2.0, 0.0])
    graph = make_fx(step)(x, torch.zeros(3))
    assert _ops(graph)["aten.neg.default"] == 2
    simplify(graph)  # (as the capture does)
    prune(graph)
    ops = _ops(graph)
    assert ops["aten.neg.default"] == 1
    assert ops["aten.mul.Tensor"] == 2
    assert ops["aten.randn.default"] == 2
    assert ops["aten.exp.default"] == 2
    assert ops["aten.clone.default"] == 2
    # the same results as the step itself, bit for bit, draws included
    torch.manual_seed(0)
    expected = step(x, torch.zeros(3))
    torch.manual_seed(0)
    got = graph(x, torch.zeros(3))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit())


