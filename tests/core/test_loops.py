"""Reading how many steps a cell will run from its loops (``--auto``'s look ahead)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from pyro_jitmagic.policy.loops import step_counts


class Settings:
    @property
    def num_epochs(self):  # user code: not run to read a count
        raise AssertionError("the loop reader ran a property")


NAMESPACE = {"num_steps": 500, "epochs": np.int64(4), "sequences": torch.zeros(75, 10, 3),
             "data": [1.0, 2.0, 3.0], "flag": True, "args": argparse.Namespace(num_epochs=4, batches=3),
             "settings": Settings()}


@pytest.mark.parametrize(("cell", "counts"), [
    ("for i in range(1000):\n    svi.step(data)\n", {"svi": 1000}),
    # a bound assigned earlier in the cell, a loss kept, a print under an if
    ("n = 2000\nfor step in range(n):\n    loss = svi.step(data)\n    if step % 100 == 0:\n"
     "        print(loss)\n", {"svi": 2000}),
    # names from the namespace, a progress bar, arithmetic
    ("for i in tqdm(range(num_steps * 2 + 1)):\n    losses.append(svi.step(data))\n", {"svi": 1001}),
    ("for epoch in range(epochs):\n    for s in sequences[:20]:\n        svi.step(s)\n", {"svi": 80}),
    ("for epoch in range(10):\n    for i, s in enumerate(sequences):\n        svi.step(s)\n", {"svi": 750}),
    ("for i in range(len(data)):\n    svi.step(data)\n", {"svi": 3}),
    ("for i in range(10):\n    svi.step(data)\nfor i in range(5):\n    svi.step(data)\n", {"svi": 15}),
    ("try:\n    for i in range(300):\n        svi.step(data)\nexcept KeyboardInterrupt:\n    pass\n",
     {"svi": 300}),
    ("for i in range(100):\n    svi.step(data)\n    guide_svi.step(data)\n", {"svi": 100, "guide_svi": 100}),
    # comprehensions and consumed generators, counted by their iterables
    ("losses = [svi.step(data) for _ in range(800)]\n", {"svi": 800}),
    ("losses = [svi.step(s) for epoch in range(epochs) for s in sequences[:20]]\n", {"svi": 80}),
    ("total = sum(svi.step(data) for _ in range(num_steps))\n", {"svi": 500}),
    ("history = {i: svi.step(data) for i in range(10)}\n", {"svi": 10}),
    ("for epoch in range(3):\n    losses = [svi.step(s) for s in sequences]\n", {"svi": 225}),
    ("plt.plot([svi.step(data) for _ in range(40)])\n", {"svi": 40}),
    # settings held in an argparse Namespace, as Pyro's examples keep them
    ("for epoch in range(args.num_epochs):\n    for b in range(args.batches):\n        svi.step(data)\n",
     {"svi": 12}),
    # a count assigned in the cell, then the name rebound later: each read sees its value then
    ("n = 10\nfor _ in range(n):\n    svi.step(data)\nn = 20\nfor _ in range(n):\n    svi.step(data)\n",
     {"svi": 30}),
])
def test_the_loops_around_each_step_give_its_count(cell, counts):
    assert step_counts(cell, NAMESPACE) == counts


@pytest.mark.parametrize("cell", [
    "for i in range(1000):\n    svi.step(data)\n    if converged(i):\n        break\n",  # may stop early
    "while True:\n    svi.step(data)\n",
    "for i in range(10):\n    if i > 2:\n        svi.step(data)\n",  # a branch may not run
    "for x in loader:\n    svi.step(x)\n",  # a name it cannot size
    "for i in range(flag):\n    svi.step(data)\n",  # a bool is no count
    "for i in range(steps()):\n    svi.step(data)\n",  # nothing is called
    "def train():\n    for i in range(10):\n        svi.step(data)\ntrain()\n",  # runs when called
    "for i in range(10)\n    svi.step(data)\n",  # not Python: no hint, and no error
    "losses = [svi.step(data) for i in range(100) if i % 2]\n",  # a filter
    "steps = (svi.step(data) for _ in range(100))\nfor loss in steps:\n    print(loss)\n",  # later
    "any(svi.step(data) < 1.0 for _ in range(100))\n",  # stops at the first true
    "losses = list(map(lambda _: svi.step(data), range(100)))\n",  # a lambda runs when called
    "loss = svi.step(data) if flag else None\n",  # one branch of two
    "ok = warm and svi.step(data)\n",
    "for i in range(3):\n    for j in range(i):\n        svi.step(data)\n",  # the inner bound changes
    "[svi.step(data) for i in range(3) for j in range(i)]\n",
    # a name the namespace holds but the cell rebinds first: its old value is not the count
    "num_steps = int(input())\nfor _ in range(num_steps):\n    svi.step(data)\n",
    "data = load()\nfor x in data:\n    svi.step(x)\n",
    "for epoch in range(3):\n    num_steps = 7\n    for _ in range(num_steps):\n        svi.step(data)\n",
    "num_steps += 1\nfor _ in range(num_steps):\n    svi.step(data)\n",
    "if (num_steps := 3):\n    pass\nfor _ in range(num_steps):\n    svi.step(data)\n",
    "while svi.step(data) > 1.0:\n    pass\n",  # a while's test runs an unknown count
    "for e in range(settings.num_epochs):\n    svi.step(data)\n",  # an attribute of any other object
    "args = parse()\nfor e in range(args.num_epochs):\n    svi.step(data)\n",  # rebound first
    "match mode:\n    case 'fit':\n        svi.step(data)\n",  # a case may not run
])
def test_a_count_it_cannot_read_safely_is_left_out(cell):
    assert step_counts(cell, NAMESPACE) == {}


def test_a_name_also_stepped_where_its_count_is_unknown_is_left_out():
    cell = "for i in range(100):\n    svi.step(data)\nwhile not done:\n    svi.step(data)\n"
    assert step_counts(cell, NAMESPACE) == {}
