"""Small, realistic Pyro models, each as the cells a user would type.

Every entry retells one of Pyro's examples or tutorials at toy size: its data
are made in the setup cell from a fixed ``torch.Generator``, its run cell is the
training loop or the MCMC run as the example writes it, and ``by_hand`` is the
setup the example uses with its ``--jit`` flag (Pyro's own ``Jit*`` ELBOs,
``jit_compile=True``). :class:`Expect` says what a correct ``%%pyrojit`` does
with it; ``test_real_models.py`` checks that, ``bench/bench_real_models.py``
prints it as a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What every setup cell starts with: a notebook's first cell.
PRELUDE = """\
import argparse
import functools
import torch
from torch import nn
from torch.distributions import constraints
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer import JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceGraph_ELBO, JitTraceMeanField_ELBO
from pyro.infer import config_enumerate
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.optim import Adam, ClippedAdam
pyro.clear_param_store()
pyro.set_rng_seed(0)
generator = torch.Generator().manual_seed(0)
"""

AGREE = "agree"
WITHIN_NOISE = "agree within noise"
DISAGREE = "disagree"

# Words a reason for "agree within noise" may use, by why the runs part ways.
MCMC_PATHS = ("mcmc", "nuts", "hmc", "chain", "sampl", "posterior")
RANDOM_STREAMS = ("random", "draw", "stream", "rng")
#: An MCMC run's outcome: the same draws, or draws compared as samples.
SAMPLES_AGREE = "agree, or agree within noise"


@dataclass(frozen=True)
class Expect:
    """What a correct ``%%pyrojit`` does with one model.

    Attributes
    ----------
    pyro_jit : bool
        Whether Pyro's own JIT runs the model by hand (a fact about Pyro 1.9).
    by_hand_error : str
        When it does not: text of the error it raises.
    by_hand_wrong : str
        When it runs but computes something else than the model as written: why (the promise of
        plain ``%%pyrojit`` is then measured against eager alone).
    outcome : str
        The ``--compare`` verdict: ``"agree"`` (step by step), ``"agree within
        noise"`` (judged statistically) or ``"disagree"``. HMC/NUTS runs expect
        :data:`SAMPLES_AGREE`: their paths part at the first float difference of
        a gradient, unless compiled and eager gradients are equal to the bit, and
        then the draws are the same.
    reason_mentions : tuple of str
        The verdict's reason mentions at least one of these (case-insensitive);
        for ``"disagree"``, the line of the model that explains it.
    risky_line : str
        The one line a risky warning should name; empty when there is none.
    same_losses : bool
        ``--compare`` shows the same losses, step by step, in both runs.
    """

    pyro_jit: bool = True
    by_hand_error: str = ""
    by_hand_wrong: str = ""
    outcome: str = AGREE
    reason_mentions: tuple[str, ...] = ()
    risky_line: str = ""
    same_losses: bool = False


@dataclass(frozen=True)
class RealModel:
    """One model: the cells that set it up and run it, and what to expect.

    ``setup`` and ``by_hand`` are whole setup cells (the prelude included);
    ``run`` is the cell that ``%%pyrojit`` wraps.
    """

    name: str
    title: str
    setup: str
    by_hand: str
    run: str
    expect: Expect = field(default_factory=Expect)
    slow: bool = False


def _model(name: str, title: str, *, setup: str, run: str, jit: tuple[tuple[str, str], ...],
           expect: Expect | None = None, slow: bool = False) -> RealModel:
    """An entry whose by-hand setup is its setup with each ``(eager, jit)`` text replaced once."""
    by_hand = setup
    for eager, compiled in jit:
        assert by_hand.count(eager) == 1, f"{name}: {eager!r} must occur once in the setup"
        by_hand = by_hand.replace(eager, compiled)
    return RealModel(name, title, PRELUDE + setup, PRELUDE + by_hand, run, expect or Expect(), slow)


EIGHT_SCHOOLS_DATA = """
J = 8
sigma = 9.0 + 9.0 * torch.rand(J, generator=generator)       # standard errors of the effects
y = 8.0 + 6.0 * torch.randn(J, generator=generator) + sigma * torch.randn(J, generator=generator)
data = torch.stack([y, sigma], dim=1)
"""

EIGHT_SCHOOLS_SVI = _model(
    "eight_schools_svi", "eight schools, SVI with a hand-written guide",
    setup=EIGHT_SCHOOLS_DATA + """
def model(data):
    y, sigma = data[:, 0], data[:, 1]
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)

def guide(data):
    eta_loc = pyro.param("eta_loc", torch.zeros(J))
    eta_scale = pyro.param("eta_scale", torch.full((J,), 0.1), constraint=constraints.positive)
    mu_loc = pyro.param("mu_loc", torch.tensor(0.0))
    mu_scale = pyro.param("mu_scale", torch.tensor(0.1), constraint=constraints.positive)
    tau_loc = pyro.param("tau_loc", torch.tensor(1.0))
    tau_scale = pyro.param("tau_scale", torch.tensor(0.1), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(mu_loc, mu_scale))
    pyro.sample("tau", dist.LogNormal(tau_loc, tau_scale))
    with pyro.plate("schools", J):
        pyro.sample("eta", dist.Normal(eta_loc, eta_scale))

svi = SVI(model, guide, Adam({"lr": 0.01}), loss=Trace_ELBO())
""",
    run="""\
for step in range(100):
    loss = svi.step(data)
""",
    jit=(("loss=Trace_ELBO()", "loss=JitTrace_ELBO()"),),
)

EIGHT_SCHOOLS_LOWRANK = _model(
    "eight_schools_lowrank", "eight schools, SVI with AutoLowRankMultivariateNormal",
    setup=EIGHT_SCHOOLS_DATA + """
from pyro.infer.autoguide import AutoLowRankMultivariateNormal

def model(data):
    y, sigma = data[:, 0], data[:, 1]
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)

guide = AutoLowRankMultivariateNormal(model, rank=2, init_scale=0.05)
svi = SVI(model, guide, Adam({"lr": 0.02}), Trace_ELBO())
""",
    run="""\
losses = []
for step in range(80):
    losses.append(svi.step(data))
""",
    jit=(("Trace_ELBO()", "JitTrace_ELBO()"),),
)

EIGHT_SCHOOLS_NUTS = _model(
    "eight_schools_nuts", "eight schools, NUTS on a conditioned model",
    setup=EIGHT_SCHOOLS_DATA + """
def model(sigma):
    eta = pyro.sample("eta", dist.Normal(torch.zeros(J), torch.ones(J)).to_event(1))
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    return pyro.sample("obs", dist.Normal(mu + tau * eta, sigma).to_event(1))

def conditioned_model(model, sigma, y):
    return poutine.condition(model, data={"obs": y})(sigma)

nuts_kernel = NUTS(conditioned_model)
""",
    run="""\
mcmc = MCMC(nuts_kernel, num_samples=30, warmup_steps=30, disable_progbar=True)
mcmc.run(model, sigma, y)
posterior = mcmc.get_samples()
""",
    jit=(("NUTS(conditioned_model)", "NUTS(conditioned_model, jit_compile=True)"),),
    # NUTS and HMC chains are judged statistically: posterior means in Monte Carlo standard errors
    expect=Expect(outcome=SAMPLES_AGREE, reason_mentions=MCMC_PATHS),
    slow=True,
)

BASEBALL = _model(
    "baseball", "baseball batting averages, NUTS on three models, one with a hook_fn",
    setup="""
from pyro.distributions.util import scalar_like

num_players = 12
at_bats = torch.full((num_players,), 45.0)
true_averages = 0.15 + 0.2 * torch.rand(num_players, generator=generator)
hits = torch.distributions.Binomial(at_bats, true_averages).sample()
args = argparse.Namespace(num_samples=30, warmup_steps=30, jit=False)

def not_pooled(at_bats, hits):
    with pyro.plate("num_players", at_bats.shape[0]):
        phi = pyro.sample("phi", dist.Uniform(scalar_like(at_bats, 0), scalar_like(at_bats, 1)))
        return pyro.sample("obs", dist.Binomial(at_bats, phi), obs=hits)

def partially_pooled(at_bats, hits):
    m = pyro.sample("m", dist.Uniform(scalar_like(at_bats, 0), scalar_like(at_bats, 1)))
    kappa = pyro.sample("kappa", dist.Pareto(scalar_like(at_bats, 1), scalar_like(at_bats, 1.5)))
    with pyro.plate("num_players", at_bats.shape[0]):
        phi = pyro.sample("phi", dist.Beta(m * kappa, (1 - m) * kappa))
        return pyro.sample("obs", dist.Binomial(at_bats, phi), obs=hits)

def partially_pooled_with_logit(at_bats, hits):
    loc = pyro.sample("loc", dist.Normal(scalar_like(at_bats, -1), scalar_like(at_bats, 1)))
    scale = pyro.sample("scale", dist.HalfCauchy(scale=scalar_like(at_bats, 1)))
    with pyro.plate("num_players", at_bats.shape[0]):
        alpha = pyro.sample("alpha", dist.Normal(loc, scale))
        return pyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)

step_sizes = []

def record_step_size(kernel, params, stage, i):
    step_sizes.append((stage, kernel.step_size))
""",
    run="""\
posteriors = {}
for model in (not_pooled, partially_pooled, partially_pooled_with_logit):
    nuts_kernel = NUTS(model, jit_compile=args.jit, ignore_jit_warnings=True)
    hook = record_step_size if model is partially_pooled_with_logit else None
    mcmc = MCMC(nuts_kernel, num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                hook_fn=hook, disable_progbar=True)
    mcmc.run(at_bats, hits)
    posteriors[model.__name__] = mcmc.get_samples()
""",
    jit=(("jit=False", "jit=True"),),
    # NUTS and HMC chains are judged statistically: posterior means in Monte Carlo standard errors
    expect=Expect(outcome=SAMPLES_AGREE, reason_mentions=MCMC_PATHS),
    slow=True,
)

HMM = _model(
    "hmm", "HMM over binary tones, parallel enumeration, subsampled sequences, args=args",
    setup="""
from pyro.infer.autoguide import AutoDelta
from pyro.util import ignore_jit_warnings

# 16 padded sequences of 6 binary tones, 5 to 10 steps long
num_sequences, max_length, data_dim = 16, 10, 6
lengths = torch.randint(5, max_length + 1, (num_sequences,), generator=generator)
sequences = (torch.rand(num_sequences, max_length, data_dim, generator=generator) < 0.3).float()
sequences *= (torch.arange(max_length) < lengths.unsqueeze(-1)).unsqueeze(-1).float()
args = argparse.Namespace(hidden_dim=4, batch_size=4, learning_rate=0.05, num_steps=25, jit=False)

def model_1(sequences, lengths, args, batch_size=None, include_prior=True):
    with ignore_jit_warnings():
        num_sequences, max_length, data_dim = map(int, sequences.shape)
        assert lengths.shape == (num_sequences,)
        assert lengths.max() <= max_length
    with poutine.mask(mask=include_prior):
        probs_x = pyro.sample("probs_x",
                              dist.Dirichlet(0.9 * torch.eye(args.hidden_dim) + 0.1).to_event(1))
        probs_y = pyro.sample("probs_y",
                              dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2))
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, batch_size, dim=-2) as batch:
        lengths = lengths[batch]
        x = 0
        # every step to the longest sequence: one program structure for every batch
        for t in pyro.markov(range(max_length)):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]),
                                infer={"enumerate": "parallel"})
                with tones_plate:
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                                obs=sequences[batch, t])

guide = AutoDelta(poutine.block(model_1, expose_fn=lambda msg: msg["name"].startswith("probs_")))
elbo = TraceEnum_ELBO(max_plate_nesting=2, strict_enumeration_warning=True)
svi = SVI(model_1, guide, Adam({"lr": args.learning_rate}), elbo)
""",
    run="""\
for step in range(args.num_steps):
    loss = svi.step(sequences, lengths, args=args, batch_size=args.batch_size)
train_loss = elbo.loss(model_1, guide, sequences, lengths, args, include_prior=False)
""",
    jit=(("elbo = TraceEnum_ELBO(", "elbo = JitTraceEnum_ELBO("),),
)

LDA = _model(
    "lda", "amortized LDA, an nn.Module guide, TraceEnum_ELBO, args=args",
    setup="""
args = argparse.Namespace(num_topics=3, num_words=24, num_docs=40, num_words_per_doc=16,
                          layer_sizes="12", learning_rate=0.01, batch_size=10, num_steps=30)

def model(data=None, args=None, batch_size=None):
    with pyro.plate("topics", args.num_topics):
        topic_weights = pyro.sample("topic_weights", dist.Gamma(1.0 / args.num_topics, 1.0))
        topic_words = pyro.sample("topic_words",
                                  dist.Dirichlet(torch.ones(args.num_words) / args.num_words))
    with pyro.plate("documents", args.num_docs) as ind:
        if data is not None:
            with pyro.util.ignore_jit_warnings():
                assert data.shape == (args.num_words_per_doc, args.num_docs)
            data = data[:, ind]
        doc_topics = pyro.sample("doc_topics", dist.Dirichlet(topic_weights))
        with pyro.plate("words", args.num_words_per_doc):
            word_topics = pyro.sample("word_topics", dist.Categorical(doc_topics),
                                      infer={"enumerate": "parallel"})
            data = pyro.sample("doc_words", dist.Categorical(topic_words[word_topics]), obs=data)
    return topic_weights, topic_words, data

def make_predictor(args):
    sizes = [args.num_words] + [int(s) for s in args.layer_sizes.split("-")] + [args.num_topics]
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layer = nn.Linear(n_in, n_out)
        layer.weight.data.normal_(0, 0.001)
        layer.bias.data.normal_(0, 0.001)
        layers += [layer, nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Softmax(dim=-1))

def parametrized_guide(predictor, data, args, batch_size=None):
    topic_weights_posterior = pyro.param("topic_weights_posterior", lambda: torch.ones(args.num_topics),
                                         constraint=constraints.positive)
    topic_words_posterior = pyro.param("topic_words_posterior",
                                       lambda: torch.ones(args.num_topics, args.num_words),
                                       constraint=constraints.greater_than(0.5))
    with pyro.plate("topics", args.num_topics):
        pyro.sample("topic_weights", dist.Gamma(topic_weights_posterior, 1.0))
        pyro.sample("topic_words", dist.Dirichlet(topic_words_posterior))
    pyro.module("predictor", predictor)
    with pyro.plate("documents", args.num_docs, batch_size) as ind:
        data = data[:, ind]
        counts = torch.zeros(args.num_words, ind.size(0)).scatter_add(0, data, torch.ones(data.shape))
        doc_topics = predictor(counts.transpose(0, 1))
        pyro.sample("doc_topics", dist.Delta(doc_topics, event_dim=1))

true_topic_weights, true_topic_words, data = model(args=args)   # synthetic documents
predictor = make_predictor(args)
guide = functools.partial(parametrized_guide, predictor)
elbo = TraceEnum_ELBO(max_plate_nesting=2)
svi = SVI(model, guide, ClippedAdam({"lr": args.learning_rate}), elbo)
""",
    run="""\
for step in range(args.num_steps):
    loss = svi.step(data, args=args, batch_size=args.batch_size)
""",
    jit=(("elbo = TraceEnum_ELBO(", "elbo = JitTraceEnum_ELBO("),),
)

SPARSE_GAMMA_DEF = _model(
    "sparse_gamma_def", "sparse gamma DEF, TraceMeanField_ELBO, random inits",
    setup="""
from torch.nn.functional import softplus

def rand_tensor(shape, mean, sigma):
    return mean * torch.ones(shape) + sigma * torch.randn(shape)

class SparseGammaDEF:
    def __init__(self):
        self.top_width, self.mid_width, self.bottom_width, self.image_size = 4, 3, 2, 10
        self.alpha_z, self.beta_z = torch.tensor(0.1), torch.tensor(0.1)
        self.alpha_w, self.beta_w = torch.tensor(0.1), torch.tensor(0.3)
        self.alpha_init, self.mean_init, self.sigma_init = 0.5, 0.0, 0.1

    def model(self, x):
        x_size = x.size(0)
        with pyro.plate("w_top_plate", self.top_width * self.mid_width):
            w_top = pyro.sample("w_top", dist.Gamma(self.alpha_w, self.beta_w))
        with pyro.plate("w_mid_plate", self.mid_width * self.bottom_width):
            w_mid = pyro.sample("w_mid", dist.Gamma(self.alpha_w, self.beta_w))
        with pyro.plate("w_bottom_plate", self.bottom_width * self.image_size):
            w_bottom = pyro.sample("w_bottom", dist.Gamma(self.alpha_w, self.beta_w))
        with pyro.plate("data", x_size):
            z_top = pyro.sample("z_top",
                                dist.Gamma(self.alpha_z, self.beta_z).expand([self.top_width]).to_event(1))
            mean_mid = torch.matmul(z_top, w_top.reshape(self.top_width, self.mid_width))
            z_mid = pyro.sample("z_mid", dist.Gamma(self.alpha_z, self.beta_z / mean_mid).to_event(1))
            mean_bottom = torch.matmul(z_mid, w_mid.reshape(self.mid_width, self.bottom_width))
            z_bottom = pyro.sample("z_bottom",
                                   dist.Gamma(self.alpha_z, self.beta_z / mean_bottom).to_event(1))
            mean_obs = torch.matmul(z_bottom, w_bottom.reshape(self.bottom_width, self.image_size))
            pyro.sample("obs", dist.Poisson(mean_obs).to_event(1), obs=x)

    def guide(self, x):
        x_size = x.size(0)

        def sample_zs(name, width):
            alpha_z_q = pyro.param(f"alpha_z_q_{name}",
                                   lambda: rand_tensor((x_size, width), self.alpha_init, self.sigma_init))
            mean_z_q = pyro.param(f"mean_z_q_{name}",
                                  lambda: rand_tensor((x_size, width), self.mean_init, self.sigma_init))
            alpha_z_q, mean_z_q = softplus(alpha_z_q), softplus(mean_z_q)
            pyro.sample(f"z_{name}", dist.Gamma(alpha_z_q, alpha_z_q / mean_z_q).to_event(1))

        def sample_ws(name, width):
            # the initial value is drawn on every call; pyro.param keeps only the first
            alpha_w_q = pyro.param(f"alpha_w_q_{name}", rand_tensor(width, self.alpha_init, self.sigma_init))
            mean_w_q = pyro.param(f"mean_w_q_{name}",
                                  lambda: rand_tensor(width, self.mean_init, self.sigma_init))
            alpha_w_q, mean_w_q = softplus(alpha_w_q), softplus(mean_w_q)
            pyro.sample(f"w_{name}", dist.Gamma(alpha_w_q, alpha_w_q / mean_w_q))

        with pyro.plate("w_top_plate", self.top_width * self.mid_width):
            sample_ws("top", self.top_width * self.mid_width)
        with pyro.plate("w_mid_plate", self.mid_width * self.bottom_width):
            sample_ws("mid", self.mid_width * self.bottom_width)
        with pyro.plate("w_bottom_plate", self.bottom_width * self.image_size):
            sample_ws("bottom", self.bottom_width * self.image_size)
        with pyro.plate("data", x_size):
            sample_zs("top", self.top_width)
            sample_zs("mid", self.mid_width)
            sample_zs("bottom", self.bottom_width)

def clip_params():
    # keep the gamma means away from zero, as the example does after each step
    for param, clip in zip(("alpha", "mean"), (-2.5, -4.5)):
        for layer in ("_q_top", "_q_mid", "_q_bottom"):
            for wz in ("_w", "_z"):
                pyro.param(param + wz + layer).data.clamp_(min=clip)

data = torch.poisson(3.0 * torch.rand(8, 10, generator=generator), generator=generator)
sparse_gamma_def = SparseGammaDEF()
opt = pyro.optim.AdagradRMSProp({"eta": 0.5, "t": 0.1})
svi = SVI(sparse_gamma_def.model, sparse_gamma_def.guide, opt, loss=TraceMeanField_ELBO())
""",
    run="""\
for k in range(30):
    loss = svi.step(data)
    clip_params()
""",
    jit=(("loss=TraceMeanField_ELBO()", "loss=JitTraceMeanField_ELBO()"),),
    # the init value drawn on every call is not in the trace, so each compiled step draws
    # fewer random numbers than an eager one: the two runs' random streams part after step 1
    expect=Expect(outcome=WITHIN_NOISE, reason_mentions=RANDOM_STREAMS),
)

SIR = _model(
    "sir_hmc", "SIR epidemic, HMC on a continuous-latent SIR",
    setup="""
args = argparse.Namespace(population=200, recovery_time=4.0, duration=12, jit=False)

def sir_model(args, data):
    R0 = pyro.sample("R0", dist.LogNormal(0.5, 0.5))
    rho = pyro.sample("rho", dist.Beta(2.0, 2.0))    # response rate
    tau = args.recovery_time
    S, I = torch.tensor(args.population - 1.0), torch.tensor(1.0)
    for t, datum in enumerate(data):
        S2I = S * -(-(R0 / tau) * I / args.population).expm1()   # expected new infections
        I2R = I / tau
        S, I = S - S2I, I + S2I - I2R
        pyro.sample(f"obs_{t}", dist.Poisson(rho * S2I + 0.01), obs=datum)

with poutine.trace() as tr, poutine.condition(data={"R0": torch.tensor(2.5), "rho": torch.tensor(0.6)}):
    sir_model(args, [None] * args.duration)
data = torch.stack([tr.trace.nodes[f"obs_{t}"]["value"] for t in range(args.duration)])
""",
    run="""\
kernel = HMC(sir_model, step_size=0.05, num_steps=8, jit_compile=args.jit)
mcmc = MCMC(kernel, num_samples=30, warmup_steps=30, disable_progbar=True)
mcmc.run(args, data)
""",
    jit=(("jit=False", "jit=True"),),
    # NUTS and HMC chains are judged statistically: posterior means in Monte Carlo standard errors
    expect=Expect(outcome=SAMPLES_AGREE, reason_mentions=MCMC_PATHS),
    slow=True,
)

VAE = _model(
    "vae", "VAE on binary images, pyro.module encoder and decoder, mini-batches",
    setup="""
class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(20, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))

class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, 20)
        self.softplus = nn.Softplus()

    def forward(self, z):
        return self.fc2(self.softplus(self.fc1(z)))   # logits of each pixel

class VAE(nn.Module):
    def __init__(self, z_dim=2, hidden_dim=16):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

images = (torch.rand(64, 20, generator=generator) < 0.4).float()
batches = images.split(16)
vae = VAE()
svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())
""",
    run="""\
epoch_losses = []
for epoch in range(8):
    epoch_loss = 0.0
    for x in batches:
        epoch_loss += svi.step(x)
    epoch_losses.append(epoch_loss / len(images))
""",
    jit=(("loss=Trace_ELBO()", "loss=JitTrace_ELBO()"),),
)

DMM = _model(
    "dmm", "deep Markov model, GRU guide, KL annealing, padded mini-batches",
    setup="""
class Emitter(nn.Module):
    def __init__(self, input_dim, z_dim, emission_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, input_dim)

    def forward(self, z_t):
        return torch.sigmoid(self.lin_hidden_to_input(torch.relu(self.lin_z_to_hidden(z_t))))

class GatedTransition(nn.Module):
    def __init__(self, z_dim, transition_dim):
        super().__init__()
        self.lin_gate = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(),
                                      nn.Linear(transition_dim, z_dim), nn.Sigmoid())
        self.lin_proposed_mean = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(),
                                               nn.Linear(transition_dim, z_dim))
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc.weight.data = torch.eye(z_dim)
        self.lin_z_to_loc.bias.data = torch.zeros(z_dim)

    def forward(self, z_t_1):
        gate = self.lin_gate(z_t_1)
        proposed_mean = self.lin_proposed_mean(z_t_1)
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = nn.functional.softplus(self.lin_sig(torch.relu(proposed_mean)))
        return loc, scale

class Combiner(nn.Module):
    def __init__(self, z_dim, rnn_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_t_1, h_rnn):
        h_combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
        loc = self.lin_hidden_to_loc(h_combined)
        scale = nn.functional.softplus(self.lin_hidden_to_scale(h_combined))
        return loc, scale

class DMM(nn.Module):
    def __init__(self, input_dim=5, z_dim=3, emission_dim=8, transition_dim=8, rnn_dim=8):
        super().__init__()
        self.emitter = Emitter(input_dim, z_dim, emission_dim)
        self.trans = GatedTransition(z_dim, transition_dim)
        self.combiner = Combiner(z_dim, rnn_dim)
        self.rnn = nn.GRU(input_size=input_dim, hidden_size=rnn_dim, batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, mini_batch, mini_batch_reversed, mini_batch_mask, reverse_index, annealing_factor=1.0):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        z_prev = self.z_0.expand(mini_batch.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.trans(z_prev)
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale)
                                      .mask(mini_batch_mask[:, t - 1:t]).to_event(1))
                emission_probs_t = self.emitter(z_t)
                pyro.sample(f"obs_x_{t}", dist.Bernoulli(emission_probs_t)
                            .mask(mini_batch_mask[:, t - 1:t]).to_event(1),
                            obs=mini_batch[:, t - 1, :])
                z_prev = z_t

    def guide(self, mini_batch, mini_batch_reversed, mini_batch_mask, reverse_index, annealing_factor=1.0):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        h_0 = self.h_0.expand(1, mini_batch.size(0), self.rnn.hidden_size).contiguous()
        rnn_output, _ = self.rnn(mini_batch_reversed, h_0)
        # back in forward time order, each sequence within its own length
        rnn_output = rnn_output.gather(1, reverse_index.expand(-1, -1, self.rnn.hidden_size))
        z_prev = self.z_q_0.expand(mini_batch.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale)
                                      .mask(mini_batch_mask[:, t - 1:t]).to_event(1))
                z_prev = z_t

def get_mini_batch(indices, sequences, seq_lengths):
    # padded to the longest sequence overall, so that every mini-batch has one shape
    lengths = seq_lengths[indices]
    mini_batch = sequences[indices]
    T_max = mini_batch.size(1)
    steps = torch.arange(T_max)
    mask = (steps < lengths.unsqueeze(-1)).float()
    # position t of a sequence of length L holds its step L - 1 - t (padding stays put)
    reverse_index = torch.where(steps < lengths.unsqueeze(-1), lengths.unsqueeze(-1) - 1 - steps, steps)
    reverse_index = reverse_index.unsqueeze(-1)
    mini_batch_reversed = mini_batch.gather(1, reverse_index.expand(-1, -1, mini_batch.size(2)))
    return mini_batch, mini_batch_reversed, mask, reverse_index

N_train, T_max, input_dim = 12, 8, 5
training_seq_lengths = torch.randint(4, T_max + 1, (N_train,), generator=generator)
training_sequences = (torch.rand(N_train, T_max, input_dim, generator=generator) < 0.35).float()
training_sequences *= (torch.arange(T_max) < training_seq_lengths.unsqueeze(-1)).unsqueeze(-1).float()
args = argparse.Namespace(mini_batch_size=4, num_epochs=4, annealing_epochs=2, minimum_annealing_factor=0.2)
N_mini_batches = N_train // args.mini_batch_size
dmm = DMM()
adam = ClippedAdam({"lr": 0.003, "betas": (0.96, 0.999), "clip_norm": 10.0, "lrd": 0.99996,
                    "weight_decay": 2.0})
svi = SVI(dmm.model, dmm.guide, adam, loss=Trace_ELBO())
""",
    run="""\
times = []
for epoch in range(args.num_epochs):
    shuffled_indices = torch.randperm(N_train)
    epoch_nll = 0.0
    for which_mini_batch in range(N_mini_batches):
        if epoch < args.annealing_epochs:
            min_af = args.minimum_annealing_factor
            annealing_factor = min_af + (1.0 - min_af) * (epoch + 1) / args.annealing_epochs
        else:
            annealing_factor = 1.0
        indices = shuffled_indices[which_mini_batch * args.mini_batch_size:
                                   (which_mini_batch + 1) * args.mini_batch_size]
        mini_batch, mini_batch_reversed, mini_batch_mask, reverse_index = get_mini_batch(
            indices, training_sequences, training_seq_lengths)
        epoch_nll += svi.step(mini_batch, mini_batch_reversed, mini_batch_mask, reverse_index,
                              annealing_factor=annealing_factor)
    times.append(epoch_nll / float(training_seq_lengths.sum()))
""",
    jit=(("loss=Trace_ELBO()", "loss=JitTrace_ELBO()"),),
)

GMM = _model(
    "gmm", "Gaussian mixture (the GMM tutorial): enumeration, AutoDelta, init from data",
    setup="""
from collections import defaultdict
from pyro.infer.autoguide import AutoDelta

data = torch.cat([torch.randn(6, generator=generator), 10.0 + torch.randn(6, generator=generator)])
K = 2

@config_enumerate
def model(data):
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)

def init_loc_fn(site):
    if site["name"] == "weights":
        return torch.ones(K) / K
    if site["name"] == "scale":
        return (data.var() / 2).sqrt()
    if site["name"] == "locs":
        return data[torch.multinomial(torch.ones(len(data)) / len(data), K)]
    raise ValueError(site["name"])

optim = Adam({"lr": 0.1, "betas": [0.8, 0.99]})
elbo = TraceEnum_ELBO(max_plate_nesting=1)

def initialize(seed):
    global global_guide, svi
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    global_guide = AutoDelta(poutine.block(model, expose=["weights", "locs", "scale"]),
                             init_loc_fn=init_loc_fn)
    svi = SVI(model, global_guide, optim, loss=elbo)
    return svi.loss(model, global_guide, data)

loss, seed = min((initialize(seed), seed) for seed in range(3))   # the best of a few initialisations
initialize(seed)
""",
    run="""\
gradient_norms = defaultdict(list)
for name, value in pyro.get_param_store().named_parameters():
    value.register_hook(lambda g, name=name: gradient_norms[name].append(g.norm().item()))
losses = []
for i in range(50):
    loss = svi.step(data)
    losses.append(loss)
""",
    jit=(("elbo = TraceEnum_ELBO(", "elbo = JitTraceEnum_ELBO("),),
)

REGRESSION_DATA = """
from pyro.nn import PyroModule, PyroSample

# log GDP against terrain ruggedness, inside and outside Africa, with their interaction
cont_africa = (torch.rand(40, generator=generator) < 0.4).float()
rugged = 3.0 * torch.rand(40, generator=generator)
x_data = torch.stack([cont_africa, rugged, cont_africa * rugged], dim=1)
y_data = 9.0 - 1.9 * cont_africa - 0.2 * rugged + 0.4 * cont_africa * rugged \\
    + 0.5 * torch.randn(40, generator=generator)

class BayesianRegression(PyroModule):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            obs = pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean

model = BayesianRegression(3, 1)
"""

BAYESIAN_REGRESSION = _model(
    "bayesian_regression", "Bayesian regression, PyroModule with PyroSample, AutoDiagonalNormal",
    setup=REGRESSION_DATA + """
from pyro.infer.autoguide import AutoDiagonalNormal

guide = AutoDiagonalNormal(model)
adam = pyro.optim.Adam({"lr": 0.03})
svi = SVI(model, guide, adam, loss=Trace_ELBO())
""",
    run="""\
for j in range(100):
    loss = svi.step(x_data, y_data)
""",
    jit=(("loss=Trace_ELBO()", "loss=JitTrace_ELBO()"),),
)

REGRESSION_MVN = _model(
    "regression_mvn", "Bayesian regression, PyroModule, AutoMultivariateNormal",
    setup=REGRESSION_DATA + """
from pyro.infer.autoguide import AutoMultivariateNormal

guide = AutoMultivariateNormal(model, init_scale=0.05)
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.03}), loss=Trace_ELBO())
""",
    run="""\
for j in range(40):
    loss = svi.step(x_data, y_data)
""",
    jit=(("loss=Trace_ELBO()", "loss=JitTrace_ELBO()"),),
)

TRACEGRAPH_MODEL = """
# two clusters; which one each point came from is a discrete latent, guessed by the guide
data = torch.cat([torch.randn(10, generator=generator) - 2.0, torch.randn(10, generator=generator) + 2.0])
locs = torch.tensor([-2.0, 2.0])

def model(data):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Bernoulli(p))
        pyro.sample("obs", dist.Normal(locs[z.long()], 1.0), obs=data)

def guide(data):
    alpha_q = pyro.param("alpha_q", torch.tensor(2.0), constraint=constraints.positive)
    beta_q = pyro.param("beta_q", torch.tensor(2.0), constraint=constraints.positive)
    probs_q = pyro.param("probs_q", torch.full((len(data),), 0.5), constraint=constraints.unit_interval)
    pyro.sample("p", dist.Beta(alpha_q, beta_q))
    with pyro.plate("data", len(data)):
        pyro.sample("z", dist.Bernoulli(probs_q), infer=dict(baseline=baseline))
"""

TRACEGRAPH = _model(
    "tracegraph", "TraceGraph_ELBO with non-reparameterizable discrete sites",
    setup=TRACEGRAPH_MODEL + """
baseline = {}
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01, "betas": (0.93, 0.999)}), loss=TraceGraph_ELBO())
""",
    run="""\
for k in range(40):
    svi.step(data)
""",
    jit=(("loss=TraceGraph_ELBO()", "loss=JitTraceGraph_ELBO()"),),
)

TRACEGRAPH_BASELINE = _model(
    "tracegraph_baseline", "TraceGraph_ELBO with a decaying-average baseline",
    setup=TRACEGRAPH_MODEL + """
baseline = {"use_decaying_avg_baseline": True, "baseline_beta": 0.90}
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01, "betas": (0.93, 0.999)}), loss=TraceGraph_ELBO())
""",
    run="""\
for k in range(40):
    svi.step(data)
""",
    jit=(("loss=TraceGraph_ELBO()", "loss=JitTraceGraph_ELBO()"),),
    # the baseline's running average is written into the param store from inside the trace
    expect=Expect(pyro_jit=False, by_hand_error="Cannot insert a Tensor that requires grad as a constant"),
)

CAPTURE_RECAPTURE = _model(
    "capture_recapture", "capture-recapture (CJS), enumerated alive states, TraceEnum_ELBO",
    setup="""
from pyro.infer.autoguide import AutoDiagonalNormal

# 12 marked animals over 5 occasions; each is first caught on some occasion
N, T = 12, 5
first = torch.randint(0, T - 1, (N,), generator=generator)
alive = torch.ones(N)
history = []
for t in range(T):
    alive = torch.where(t > first, alive * (torch.rand(N, generator=generator) < 0.8).float(), alive)
    seen = torch.where(t == first, torch.ones(N), alive * (torch.rand(N, generator=generator) < 0.6).float())
    history.append(torch.where(t < first, torch.zeros(N), seen))
capture_history = torch.stack(history, dim=1)
sex = (torch.rand(N, generator=generator) < 0.5).float()

def model_1(capture_history, sex):
    N, T = capture_history.shape
    phi = pyro.sample("phi", dist.Uniform(0.0, 1.0))   # survival probability
    rho = pyro.sample("rho", dist.Uniform(0.0, 1.0))   # recapture probability
    with pyro.plate("animals", N, dim=-1):
        z = torch.ones(N)
        # the latent state is known alive on the first capture and masked before it
        first_capture_mask = torch.zeros(N).bool()
        for t in pyro.markov(range(T)):
            with poutine.mask(mask=first_capture_mask):
                mu_z_t = first_capture_mask.float() * phi * z + (1 - first_capture_mask.float())
                z = pyro.sample(f"z_{t}", dist.Bernoulli(mu_z_t), infer={"enumerate": "parallel"})
                mu_y_t = rho * z
                pyro.sample(f"y_{t}", dist.Bernoulli(mu_y_t), obs=capture_history[:, t])
            first_capture_mask |= capture_history[:, t].bool()

guide = AutoDiagonalNormal(poutine.block(model_1, hide_fn=lambda site: site["name"][0:2] in ("z_", "y_")))
elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=2, vectorize_particles=True)
svi = SVI(model_1, guide, Adam({"lr": 0.01}), elbo)
""",
    run="""\
losses = []
for step in range(30):
    losses.append(svi.step(capture_history, sex))
""",
    jit=(("elbo = TraceEnum_ELBO(", "elbo = JitTraceEnum_ELBO("),),
)

FULL_MASS = _model(
    "nuts_full_mass", "NUTS with full_mass=True on a correlated regression",
    setup="""
# two predictors that move together: their coefficients are strongly correlated a posteriori
u = torch.randn(30, generator=generator)
X = torch.stack([u, u + 0.1 * torch.randn(30, generator=generator)], dim=1)
y = 1.0 + X @ torch.tensor([1.0, 1.0]) + 0.5 * torch.randn(30, generator=generator)
args = argparse.Namespace(num_samples=30, warmup_steps=30, jit=False)

def model(X, y):
    intercept = pyro.sample("intercept", dist.Normal(0.0, 5.0))
    coefs = pyro.sample("coefs", dist.Normal(torch.zeros(2), 5.0).to_event(1))
    noise = pyro.sample("noise", dist.HalfNormal(1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(intercept + X @ coefs, noise), obs=y)
""",
    run="""\
nuts_kernel = NUTS(model, full_mass=True, jit_compile=args.jit, ignore_jit_warnings=True)
mcmc = MCMC(nuts_kernel, num_samples=args.num_samples, warmup_steps=args.warmup_steps, disable_progbar=True)
mcmc.run(X, y)
mass_matrix = nuts_kernel.inverse_mass_matrix
""",
    jit=(("jit=False", "jit=True"),),
    # NUTS and HMC chains are judged statistically: posterior means in Monte Carlo standard errors
    expect=Expect(outcome=SAMPLES_AGREE, reason_mentions=MCMC_PATHS),
    slow=True,
)

CUSTOM_OBJECTIVES = _model(
    "custom_objectives", "a custom training loop: differentiable_loss and torch.optim, AutoNormal",
    setup="""
from pyro.infer.autoguide import AutoNormal

data = 0.5 + 2.0 * torch.randn(50, generator=generator)

def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 3.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)

guide = AutoNormal(model)
guide(data)   # creates the guide's parameters, so that torch.optim can see them
opt = torch.optim.Adam(guide.parameters(), lr=0.01)
loss_fn = Trace_ELBO().differentiable_loss
""",
    run="""\
for step in range(100):
    opt.zero_grad()
    loss = loss_fn(model, guide, data)
    loss.backward()
    opt.step()
""",
    jit=(("loss_fn = Trace_ELBO()", "loss_fn = JitTrace_ELBO()"),),
)

NET_DATA = """
x = torch.randn(50, 1, generator=generator)
y = 3 * x[:, 0] + 1
"""

#: the network models' cell after their data: ``net`` registered with pyro.module, an empty guide
NET_CELL = """
def model(x, y):
    pyro.module("net", net)
    with pyro.plate("n", len(x)):
        pyro.sample("obs", dist.Normal(net(x)[:, 0], 0.5), obs=y)

def guide(x, y):
    pass

svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
"""

NET = _model(
    "net_empty_guide", "an nn.Linear registered with pyro.module, an empty guide",
    setup="""
net = nn.Linear(1, 1)
""" + NET_DATA + NET_CELL,
    run="""\
losses = [svi.step(x, y) for step in range(100)]
""",
    jit=(("Trace_ELBO()", "JitTrace_ELBO()"),),
    # no latent variable and no random draw: the losses are a deterministic function of the weights
    expect=Expect(same_losses=True),
)

NET_BATCHNORM = _model(
    "net_batchnorm", "the same net behind a BatchNorm1d (running statistics are buffers)",
    setup="""
net = nn.Sequential(nn.BatchNorm1d(1), nn.Linear(1, 1))
""" + NET_DATA + NET_CELL,
    run="""\
losses = [svi.step(x, y) for step in range(60)]
""",
    jit=(("Trace_ELBO()", "JitTrace_ELBO()"),),
    # in training mode BatchNorm normalises with the batch's statistics: the running ones do not
    # enter the loss; Pyro's trace holds the count of batches as a constant copy, which it never moves
    expect=Expect(same_losses=True, by_hand_wrong="its trace leaves the BatchNorm's count of batches "
                                                  "where its first step left it"),
)

RANDOM_INIT = _model(
    "random_param_init", "a guide whose param starts at random (pyro.param with a lambda)",
    setup="""
data = torch.randn(30, 8, generator=generator) + torch.arange(8.0)

def model(data):
    with pyro.plate("dims", 8):
        m = pyro.sample("m", dist.Normal(0.0, 10.0))
    with pyro.plate("data", data.shape[0], dim=-2):
        pyro.sample("obs", dist.Normal(m, 1.0), obs=data)

def guide(data):
    m_loc = pyro.param("m_loc", lambda: torch.randn(8))
    m_scale = pyro.param("m_scale", lambda: torch.ones(8), constraint=constraints.positive)
    with pyro.plate("dims", 8):
        pyro.sample("m", dist.Normal(m_loc, m_scale))

svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
""",
    run="""\
for step in range(60):
    svi.step(data)
""",
    jit=(("Trace_ELBO()", "JitTrace_ELBO()"),),
    # the init is drawn on the first step, inside what Pyro runs eagerly before tracing: that
    # eager run is the first step's result, so both runs draw the same numbers from then on
    expect=Expect(outcome=AGREE),
)

CONTROL_LINE = "scale = 1.0 if loc > 0 else 2.0"

CONTROL = _model(
    "control_branch", "control: the model branches on a tensor value",
    setup=f"""
data = 0.5 + 2.0 * torch.randn(30, generator=generator)

def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    {CONTROL_LINE}
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)

def guide(data):
    loc_loc = pyro.param("loc_loc", torch.tensor(0.0))
    pyro.sample("loc", dist.Normal(loc_loc, 1.0))

svi = SVI(model, guide, Adam({{"lr": 0.05}}), Trace_ELBO())
""",
    run="""\
for step in range(30):
    svi.step(data)
""",
    jit=(("Trace_ELBO()", "JitTrace_ELBO()"),),
    # Pyro's trace keeps the branch taken while tracing, wrong for loc <= 0: the sentinel's check of the
    # first compiled step finds its loss is not eager's, and the steps run eager from there
    expect=Expect(outcome=AGREE, reason_mentions=("the sentinel found a compiled step wrong",),
                  risky_line=CONTROL_LINE,
                  by_hand_wrong="its trace keeps the side of the branch taken while tracing"),
)

MODELS: tuple[RealModel, ...] = (
    EIGHT_SCHOOLS_SVI, EIGHT_SCHOOLS_LOWRANK, EIGHT_SCHOOLS_NUTS, BASEBALL, HMM, LDA, SPARSE_GAMMA_DEF,
    SIR, VAE, DMM, GMM, BAYESIAN_REGRESSION, REGRESSION_MVN, TRACEGRAPH, TRACEGRAPH_BASELINE,
    CAPTURE_RECAPTURE, FULL_MASS, CUSTOM_OBJECTIVES, NET, NET_BATCHNORM, RANDOM_INIT, CONTROL,
)

BY_NAME = {m.name: m for m in MODELS}
