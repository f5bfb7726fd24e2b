"""Everyday notebook habits that change what a compiled step would see, each as the cells a user types.

Each :class:`Case` is a setup cell and the cells run after it, in order, each either eager (as
written) or under ``%%pyrojit`` one way: plain (the climb, which reaches the whole step on 800
steps), ``--backend pyro`` (Pyro's JIT from the first step) and ``--backend step`` (the whole
step from its second). Every way must give eager's losses, params, optimizer state and random
streams; where a way runs steps eager to do so, the report says why (``named``).
"""

from __future__ import annotations

from dataclasses import dataclass

PRELUDE = """\
import random
import numpy as np
import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from pyro.optim import Adam
generator = torch.Generator().manual_seed(0)
losses = []
"""

#: A model with one latent location and a prior scale it reads from a global.
GAUSSIAN = """
data = torch.randn(40, generator=generator) + 1.0
prior_scale = 10.0

def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, prior_scale))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

guide = AutoNormal(model)
elbo = Trace_ELBO()
svi = SVI(model, guide, Adam({"lr": 0.05}), elbo)
"""

WAYS = {"plain": "", "pyro": "--backend pyro", "step": "--backend step"}


@dataclass(frozen=True)
class Case:
    """One habit: its setup, its cells (``{n}`` is the loop's step count), and what each way must say
    when it runs steps eager (``named``: a word of its report's guards or switch lines, per way; a
    way absent from it says nothing, or may say anything)."""

    name: str
    setup: str
    cells: tuple[str, ...]
    named: tuple[tuple[str, str], ...] = ()
    ways: tuple[str, ...] = tuple(WAYS)

    #: ways whose random stream parts from eager's, and must say so (``draws part``): Pyro's trace
    #: drops a draw nothing uses; losses then agree in distribution only
    draws_part: tuple[str, ...] = ()
    #: names in the namespace whose values must be eager's too (what a hook or a callback recorded)
    kept: tuple[str, ...] = ()

    def named_for(self, way: str) -> str:
        return dict(self.named).get(way, "")


def loop(body: str, n: str = "{n}") -> str:
    """A cell's training loop, with ``body`` inside it."""
    return f"for step in range({n}):\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())


STEP = "losses.append(svi.step(data))"

CASES = (
    Case("guarded int read", PRELUDE + """
data = torch.randn(20, 10, generator=generator) + 1.0
lengths = torch.randint(3, 11, (20,), generator=generator)

def model(data, lengths):
    T = int(lengths.max())
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("seqs", data.shape[0]):
        mask = torch.arange(T) < lengths.unsqueeze(-1)
        pyro.sample("obs", dist.Normal(loc, 1.0).expand([data.shape[0], T]).mask(mask).to_event(1),
                    obs=data[:, :T])

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("lengths = torch.randint(3, 11, (20,), generator=generator)\n"
           "losses.append(svi.step(data, lengths))"),),
         named=(("plain", "int(tensor)"), ("step", "int(tensor)"))),
    Case("torch.no_grad around the step", PRELUDE + GAUSSIAN,
         (loop("with torch.no_grad():\n    losses.append(svi.step(data))", "5"), loop(STEP)),
         named=(("plain", "torch.no_grad()"), ("pyro", "torch.no_grad()"), ("step", "torch.no_grad()"))),
    Case("a penalty's gradient waiting in .grad", PRELUDE + GAUSSIAN,
         (loop("losses.append(svi.step(data))\n"
               "if step % 50 == 0:\n"
               "    sum((p ** 2).sum() for p in pyro.get_param_store().values()).backward()"),)),
    Case("two SVIs sharing a param, one leaving gradients", PRELUDE + """
data = torch.randn(30, generator=generator) + 0.5
net = torch.nn.Linear(1, 1)

def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

def guide_a(data):  # uses the network without pyro.module: its gradients wait in .grad
    shift = net(torch.ones(1)).squeeze()
    pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)) + 0.0 * shift, 1.0))

def guide_b(data):
    pyro.module("net", net)
    shift = net(torch.ones(1)).squeeze()
    pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)) + 0.1 * shift, 1.0))

svi_a = SVI(model, guide_a, Adam({"lr": 0.05}), Trace_ELBO())
svi_b = SVI(model, guide_b, Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("losses.append(svi_a.step(data))\nlosses.append(svi_b.step(data))"),)),
    Case("requires_grad switched off and on", PRELUDE + GAUSSIAN,
         (loop(STEP, "{third}"),
          "pyro.param('AutoNormal.locs.loc').unconstrained().requires_grad_(False)\n"
          + loop(STEP, "{third}"),
          "pyro.param('AutoNormal.locs.loc').unconstrained().requires_grad_(True)\n"
          + loop(STEP, "{third}"))),
    Case("a Pyro handler around the step", PRELUDE + GAUSSIAN,
         (loop("with poutine.scale(scale=0.01):\n    losses.append(svi.step(data))", "5"), loop(STEP)),
         named=(("plain", "ScaleMessenger"), ("pyro", "ScaleMessenger"), ("step", "ScaleMessenger"))),
    Case("the ELBO's num_particles changed between cells", PRELUDE + GAUSSIAN,
         (loop(STEP, "{half}"), "elbo.num_particles = 4\n" + loop(STEP, "{half}"))),
    Case("validation switched on in a later cell, data outside the support", PRELUDE + """
pyro.enable_validation(False)
data = torch.rand(30, generator=generator) * 3  # not counts

def model(data):
    rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Poisson(rate), obs=data)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop(STEP, "{half}"), "pyro.enable_validation(True)\n" + loop(STEP, "{half}"),
      "pyro.enable_validation(True)\n")),
    Case("a numpy draw in the model", PRELUDE + """
data = torch.randn(50, generator=generator) + 1.0

def model(data):
    batch = data[np.random.choice(50, 10)]
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(batch)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=batch)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop(STEP),),
         named=(("plain", "np.random.choice"), ("pyro", "np.random.choice"), ("step", "np.random.choice"))),
    Case("a Python random draw in the model", PRELUDE + """
data = torch.randn(50, generator=generator) + 1.0

def model(data):
    start = random.randrange(40)
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 10):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data[start:start + 10])

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop(STEP),),
         named=(("plain", "random.randrange"), ("pyro", "random.randrange"), ("step", "random.randrange"))),
    Case("a global tensor changed in place", PRELUDE + """
data = torch.randn(40, generator=generator) + 1.0
batch = data[:20].clone()

def model():
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(batch)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=batch)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("if step % 100 == 50:\n    batch.mul_(1.5)\nlosses.append(svi.step())"),)),
    Case("a global annealing factor changed every step", PRELUDE + """
data = torch.randn(30, generator=generator) + 0.5
anneal = 0.01

def model(data):
    with poutine.scale(scale=anneal):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("anneal = min(1.0, 0.01 + step / 100)\n" + STEP),),
         named=(("plain", "global anneal kept changing"), ("pyro", "global anneal kept changing"),
                ("step", "global anneal kept changing"))),
    Case("a global minibatch reassigned every step, svi.step() with no arguments", PRELUDE + """
data = torch.randn(50, generator=generator) + 1.0
batch = data[:10]

def model():
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(batch)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=batch)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("batch = data[torch.randint(0, 50, (10,), generator=generator)]\nlosses.append(svi.step())"),)),
    Case("a global prior scale changed between cells", PRELUDE + GAUSSIAN,
         (loop(STEP, "{half}"), "prior_scale = 0.05\n" + loop(STEP, "{half}"))),
    Case("an argument in another memory layout", PRELUDE + """
X = torch.from_numpy(np.asfortranarray(np.random.RandomState(0).randn(50, 3).astype("float32")))

def model(x):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, 1.0), obs=torch.ones(x.shape[0]))

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("losses.append(svi.step(X if step % 2 else X.contiguous()))"),)),
    Case("a numpy array as an argument", PRELUDE + """
values = np.random.RandomState(0).randn(30).astype("float32")

def model(x):
    x = torch.as_tensor(x)
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("losses.append(svi.step(values + 0.01 * step))"),),
         named=(("plain", "torch.as_tensor"), ("pyro", "torch.as_tensor"), ("step", "torch.as_tensor"))),
    Case("a param first made on a new keyword's first call", PRELUDE + """
data = torch.randn(30, generator=generator) + 0.5

def model(data, shifted=False):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

def guide(data, shifted=False):
    m = pyro.param("m", torch.tensor(0.0))
    if shifted:
        m = m + pyro.param("shift", torch.tensor(0.3))
    pyro.sample("loc", dist.Normal(m, 1.0))

svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("losses.append(svi.step(data, shifted=step >= 100))"),)),
    Case("an AutoIAFNormal guide", PRELUDE + """
from pyro.infer.autoguide import AutoIAFNormal
data = torch.randn(30, generator=generator) + 0.5

def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)

svi = SVI(model, AutoIAFNormal(model), Adam({"lr": 0.01}), Trace_ELBO())
""", (loop(STEP, "{short}"),), named=(("pyro", "constrained value"),)),
    Case("a tensor passed as a keyword", PRELUDE + """
x = torch.randn(30, generator=generator)
y = 2.0 * x + 0.5 + 0.1 * torch.randn(30, generator=generator)

def model(x, log_radon=None):
    slope = pyro.sample("slope", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(slope * x, 1.0), obs=log_radon)

svi = SVI(model, AutoDiagonalNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop("losses.append(svi.step(x, log_radon=y + 0.001 * step))"),)),
    Case("an enumerated HMM whose data are cut shorter between cells", PRELUDE + """
from pyro.infer.autoguide import AutoDelta
from pyro.util import ignore_jit_warnings
import argparse

sequences = (torch.rand(8, 10, 3, generator=generator) < 0.3).float()
lengths = torch.randint(5, 11, (8,), generator=generator)
args = argparse.Namespace(hidden_dim=3)

def model(sequences, lengths, args):
    with ignore_jit_warnings():
        num_sequences, max_length, data_dim = map(int, sequences.shape)
    probs_x = pyro.sample("probs_x", dist.Dirichlet(0.9 * torch.eye(args.hidden_dim) + 0.1).to_event(1))
    probs_y = pyro.sample("probs_y", dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2))
    with pyro.plate("sequences", num_sequences, dim=-2):
        x = 0
        for t in pyro.markov(range(max_length)):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
                with pyro.plate("tones", data_dim, dim=-1):
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=sequences[:, t])

guide = AutoDelta(poutine.block(model, expose_fn=lambda msg: msg["name"].startswith("probs_")))
svi = SVI(model, guide, Adam({"lr": 0.05}), TraceEnum_ELBO(max_plate_nesting=2))
""", (loop("losses.append(svi.step(sequences, lengths, args=args))", "{short}"),
      "sequences, lengths = sequences[:, :7], lengths.clamp(max=7)\n"
      + loop("losses.append(svi.step(sequences, lengths, args=args))", "{short}"))),
    Case("a guide that draws fresh initial values on every call", PRELUDE + """
J = 8
data = torch.stack([8.0 + 6.0 * torch.randn(J, generator=generator),
                    9.0 + 9.0 * torch.rand(J, generator=generator)], 1)

def model(data):
    y, sigma = data[:, 0], data[:, 1]
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)

def guide(data):  # as Pyro's example writes it: the initial values are drawn on every call
    loc_eta = pyro.param("loc_eta", torch.randn(J))
    scale_eta = pyro.param("scale_eta", 0.1 * torch.rand(J), constraint=dist.constraints.positive)
    loc_mu = pyro.param("loc_mu", torch.randn(1))
    loc_logtau = pyro.param("loc_logtau", torch.randn(1))
    pyro.sample("mu", dist.Normal(loc_mu[0], 1.0))
    pyro.sample("tau", dist.LogNormal(loc_logtau[0], 1.0))
    with pyro.plate("schools", J):
        pyro.sample("eta", dist.Normal(loc_eta, scale_eta))

svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
""", (loop(STEP),), draws_part=("pyro",)),
    # -- what nobody wrote down, in the same vein ----------------------------------------------
    Case("a config object's attribute changed between cells", PRELUDE + """
import types
data = torch.randn(40, generator=generator) + 1.0
config = types.SimpleNamespace(scale=2.0)

def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, config.scale), obs=data)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop(STEP, "{half}"), "config.scale = 0.5\n" + loop(STEP, "{half}"))),
    Case("a closure variable rebound between cells", PRELUDE + """
data = torch.randn(40, generator=generator) + 1.0

def make_model():
    noise = 1.0

    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, noise), obs=data)

    def set_noise(value):
        nonlocal noise
        noise = value

    return model, set_noise

model, set_noise = make_model()
svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop(STEP, "{half}"), "set_noise(3.0)\n" + loop(STEP, "{half}"))),
    Case("a helper function redefined between cells", PRELUDE + GAUSSIAN.replace(
        'pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)',
        'pyro.sample("obs", dist.Normal(centre(loc), 1.0), obs=data)') + """
def centre(x):
    return x
""", (loop(STEP, "{half}"), "def centre(x):\n    return x - 1.0\n" + loop(STEP, "{half}"))),
    Case("a network switched to eval mode (dropout)", PRELUDE + """
x = torch.randn(40, 3, generator=generator)
y = x.sum(-1) + 0.1 * torch.randn(40, generator=generator)
net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))

def model(x, y):
    pyro.module("net", net)
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(net(x).squeeze(-1), 1.0), obs=y)

def guide(x, y):
    pass

svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
""", (loop("losses.append(svi.step(x, y))", "{half}"),
      "net.eval()\n" + loop("losses.append(svi.step(x, y))", "{half}"))),
    Case("a gradient hook recording every step's gradient norm", PRELUDE + GAUSSIAN + """
norms = []
guide(data)  # its params, to hook
for value in pyro.get_param_store().values():
    value.unconstrained().register_hook(lambda g: norms.append(round(g.norm().item(), 4)))
""", (loop(STEP),), kept=("norms",)),
    Case("a numpy generator held by the model", PRELUDE + """
rng = np.random.default_rng(0)
data = torch.randn(50, generator=generator) + 1.0

def model(data):
    batch = data[torch.as_tensor(rng.choice(50, 10))]
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 10):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=batch)

svi = SVI(model, AutoNormal(model), Adam({"lr": 0.05}), Trace_ELBO())
""", (loop(STEP),), named=(("plain", "rng"), ("pyro", "rng"), ("step", "rng"))),
    Case("a BatchNorm net, its running statistics moved in place on every step", PRELUDE + """
x = torch.randn(64, 3, generator=generator)
y = x.sum(-1) + 0.1 * torch.randn(64, generator=generator)
net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))

def model(x, y):
    pyro.module("net", net)
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(net(x).squeeze(-1), 1.0), obs=y)

def guide(x, y):
    pass

svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
""", (loop("losses.append(svi.step(x[step % 4::4], y[step % 4::4]))", "{half}")
      + "statistics = [v.clone() for v in net[1].buffers()]\n",), kept=("statistics",)),
)

BY_NAME = {case.name: case for case in CASES}
