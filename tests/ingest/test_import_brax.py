"""`retland import-policy brax`: brax.training policies read from both of brax's formats
act exactly as brax's own deterministic inference, and bad input is refused untouched.

The policies are built with brax's own network constructors and init, their observation
statistics updated by brax's running_statistics on hopper observations, and saved with
brax's own checkpoint.save and brax.io.model.save_params: the real formats, without a
training run (brax.training's train() needs pmap and device_put_replicated)."""
from __future__ import annotations

import functools
import inspect
import pickle

import numpy as np
import pytest

from conftest import run_cli, tree_digest

ENV = "hopper"
CKPT_STEP = 40


@pytest.fixture(scope="module")
def brax_saved(tmp_path_factory):
    """Saved policies of hopper's sizes (11 observations, 3 actions): ppo checkpoint
    (hidden 16,16, normalised) and ppo params file (brax's default sizes, normalised);
    sac checkpoint (hidden 16,16, not normalised) and sac params file (the same
    network); a ppo params file with brax's plain normal distribution and log std; a
    sac checkpoint with layer norm. Also observations from hopper resets and wider."""
    import jax
    import jax.numpy as jnp
    from brax.io import model
    from brax.training.acme import running_statistics, specs
    from brax.training.agents.ppo import checkpoint as ppo_checkpoint
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.sac import checkpoint as sac_checkpoint
    from brax.training.agents.sac import networks as sac_networks

    from retland.core.envs import make_env

    root = tmp_path_factory.mktemp("brax")
    env = make_env(ENV, "positional", variant="brax")
    obs_size, action_size = int(env.observation_size), int(env.action_size)
    resets = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(7), 8)).obs
    # observations spread wider than reset noise, so the statistics and actions vary
    wide = resets + jax.random.normal(jax.random.PRNGKey(8), resets.shape)
    obs = jnp.concatenate([resets, wide])

    def statistics():
        state = running_statistics.init_state(specs.Array((obs_size,), jnp.dtype("float32")))
        return running_statistics.update(state, wide)

    out = {"obs": np.asarray(obs), "root": root}
    key = jax.random.PRNGKey(3)
    # PPO: a checkpoint with 16,16 and a params file with brax's default network
    for label, factory in [("ppo_ckpt", functools.partial(ppo_networks.make_ppo_networks,
                                                          policy_hidden_layer_sizes=(16, 16),
                                                          value_hidden_layer_sizes=(8,))),
                           ("ppo_file", ppo_networks.make_ppo_networks)]:
        net = factory(obs_size, action_size, preprocess_observations_fn=running_statistics.normalize)
        params = (statistics(), net.policy_network.init(key), net.value_network.init(key))
        if label == "ppo_ckpt":
            config = ppo_checkpoint.network_config(
                observation_size=specs.Array((obs_size,), jnp.dtype("float32")), action_size=action_size,
                normalize_observations=True, network_factory=factory)
            ppo_checkpoint.save(root / "ppo_ckpts", CKPT_STEP, params, config)
            path = root / "ppo_ckpts" / f"{CKPT_STEP:012d}"
        else:
            path = root / "ppo.params"
            model.save_params(path, params)
        out[label] = (path, ppo_networks.make_inference_fn(net), params)
    # SAC, not normalised: the same network as a checkpoint and as a params file
    factory = functools.partial(sac_networks.make_sac_networks, hidden_layer_sizes=(16, 16))
    net = factory(obs_size, action_size)  # identity preprocessing, as sac.train without normalisation
    params = (statistics(), net.policy_network.init(jax.random.PRNGKey(4)))
    config = sac_checkpoint.network_config(observation_size=obs_size, action_size=action_size,
                                           normalize_observations=False, network_factory=factory)
    sac_checkpoint.save(root / "sac_ckpts", CKPT_STEP, params, config)
    out["sac_ckpt"] = (root / "sac_ckpts" / f"{CKPT_STEP:012d}", sac_networks.make_inference_fn(net), params)
    model.save_params(root / "sac.params", params)
    out["sac_file"] = (root / "sac.params", sac_networks.make_inference_fn(net), params)
    # brax's other options that change the policy: the plain normal distribution (mode =
    # mean, no tanh) with a log std, and SAC's layer norm
    factory = functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=(16,),
                                value_hidden_layer_sizes=(8,), distribution_type="normal", noise_std_type="log")
    net = factory(obs_size, action_size, preprocess_observations_fn=running_statistics.normalize)
    params = (statistics(), net.policy_network.init(key), net.value_network.init(key))
    model.save_params(root / "ppo_normal.params", params)
    out["ppo_normal_file"] = (root / "ppo_normal.params", ppo_networks.make_inference_fn(net), params)
    factory = functools.partial(sac_networks.make_sac_networks, hidden_layer_sizes=(16, 16),
                                policy_network_layer_norm=True)
    net = factory(obs_size, action_size, preprocess_observations_fn=running_statistics.normalize)
    params = (statistics(), net.policy_network.init(key))
    config = sac_checkpoint.network_config(observation_size=obs_size, action_size=action_size,
                                           normalize_observations=True, network_factory=factory)
    sac_checkpoint.save(root / "sac_ln_ckpts", CKPT_STEP, params, config)
    out["sac_ln_ckpt"] = (root / "sac_ln_ckpts" / f"{CKPT_STEP:012d}", sac_networks.make_inference_fn(net), params)
    return out


# how each saved policy is read: the CLI options a params file needs
READ_OPTIONS = {
    "ppo_ckpt": {},
    "ppo_file": {"kind": "ppo", "normalize": True},
    "sac_ckpt": {},
    "sac_file": {"kind": "sac", "hidden_sizes": (16, 16), "normalize": False},
    "ppo_normal_file": {"kind": "ppo", "hidden_sizes": (16,), "normalize": True},
    "sac_ln_ckpt": {},
}


def test_defaults_are_brax(tmp_path):
    """The defaults stated in --help are brax's: network sizes and activation of the
    agents' network factories, normalize_observations of their train(), and the backend
    brax.envs.get_environment builds hopper with."""
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo_train
    from brax.training.agents.sac import networks as sac_networks
    from brax.training.agents.sac import train as sac_train

    from retland.ingest import brax as bi

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert tuple(default(ppo_networks.make_ppo_networks, "policy_hidden_layer_sizes")) == bi.DEFAULT_HIDDEN["ppo"]
    assert tuple(default(sac_networks.make_sac_networks, "hidden_layer_sizes")) == bi.DEFAULT_HIDDEN["sac"]
    from brax.training.networks import ACTIVATION

    assert default(ppo_networks.make_ppo_networks, "activation") is ACTIVATION[bi.DEFAULT_ACTIVATION["ppo"]]
    assert default(sac_networks.make_sac_networks, "activation") is ACTIVATION[bi.DEFAULT_ACTIVATION["sac"]]
    assert default(ppo_train.train, "normalize_observations") == bi.DEFAULT_NORMALIZE["ppo"]
    assert default(sac_train.train, "normalize_observations") == bi.DEFAULT_NORMALIZE["sac"]
    from brax import envs

    assert bi.brax_default_backend(ENV) == "generalized"
    assert envs.get_environment(ENV).backend == bi.brax_default_backend(ENV)


@pytest.mark.parametrize("label", list(READ_OPTIONS))
def test_actions_equal_brax_bit_for_bit(brax_saved, label):
    """retland's deterministic_apply with what the reader kept equals brax's
    make_inference_fn(params, deterministic=True) bit for bit: on a batch, one
    observation at a time, and vmapped, each compiled the same way on both sides."""
    import jax

    from retland.brax_import import deterministic_apply
    from retland.ingest import brax as bi

    path, make_inference, params = brax_saved[label]
    policy = bi.read(path, **READ_OPTIONS[label])
    assert (policy.obs_size, policy.action_size) == (11, 3)
    assert policy.step == (CKPT_STEP if label.endswith("ckpt") else None)
    obs = brax_saved["obs"]
    key = jax.random.PRNGKey(0)

    def theirs(p, o):
        return make_inference(p, deterministic=True)(o, key)[0]

    def ours(p, o):
        return deterministic_apply(p, o, **policy.apply_kwargs)

    pairs = {
        "batch": (jax.jit(theirs)(params, obs), jax.jit(ours)(policy.params, obs)),
        "single": (np.stack([jax.jit(theirs)(params, o) for o in obs[:4]]),
                   np.stack([jax.jit(ours)(policy.params, o) for o in obs[:4]])),
        "vmap": (jax.jit(jax.vmap(theirs, in_axes=(None, 0)))(params, obs),
                 jax.jit(jax.vmap(ours, in_axes=(None, 0)))(policy.params, obs)),
        "eager": (theirs(params, obs), ours(policy.params, obs)),
    }
    for how, (a, b) in pairs.items():
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape == (len(obs) if how != "single" else 4, 3), how
        assert np.array_equal(a, b), f"{label} {how}: max |diff| {np.abs(a - b).max()}"
    # the actions depend on the observation: the comparison is not of constants
    assert np.ptp(pairs["batch"][0], axis=0).min() > 1e-4


def test_checkpoint_parent_folder_picks_steps(brax_saved):
    """The folder brax saves every step into: the latest step by default, --step picks."""
    from retland.ingest import brax as bi

    parent = brax_saved["ppo_ckpt"][0].parent
    assert bi.read(parent).step == CKPT_STEP
    assert bi.read(parent, step=CKPT_STEP).path == brax_saved["ppo_ckpt"][0]
    with pytest.raises(bi.BraxImportError, match=f"no checkpoint of step 7; its steps: {CKPT_STEP}"):
        bi.read(parent, step=7)


# ---------------------------------------------------------------- refusals

def _bad_inputs(brax_saved, tmp):
    """(CLI arguments, a fragment of the one-line refusal) for each refusal."""
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    (empty / "notes.txt").write_text("not a checkpoint\n")
    not_brax = tmp / "dict.pkl"
    not_brax.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    text = tmp / "text.params"
    text.write_text("hello\n")
    ppo_ckpt = brax_saved["ppo_ckpt"][0]
    ppo_file = brax_saved["ppo_file"][0]
    config_only = tmp / "config_only"  # the network config without the orbax data
    config_only.mkdir(exist_ok=True)
    (config_only / "ppo_network_config.json").write_bytes((ppo_ckpt / "ppo_network_config.json").read_bytes())
    bad_config = tmp / "bad_config"
    bad_config.mkdir(exist_ok=True)
    (bad_config / "sac_network_config.json").write_text('{"action_size": 3}')
    return [
        ([config_only], "config_only: cannot read the orbax data brax saved there"),
        ([bad_config], "sac_network_config.json is not the network config brax.training writes for "
                       "make_sac_networks (KeyError: 'network_factory_kwargs')"),
        ([empty], "is not a brax checkpoint: it holds no ppo_network_config.json or sac_network_config.json"),
        ([not_brax, "--kind", "ppo"], "is not brax params: expected the pickle of (normalizer_params, policy_params"),
        ([text, "--kind", "sac"], "is not brax params"),
        ([ppo_file, "--kind", "ppo", "--hidden", "32,32"],
         "--kind ppo --hidden 32,32 does not fit the params: layer hidden_2/kernel is (32, 32) in ppo.params, "
         "(32, 6) for these sizes"),
        ([ppo_file, "--kind", "ppo", "--hidden", "64,32,32,32"],
         "layer hidden_0/kernel is (11, 32) in ppo.params, (11, 64) for these sizes"),
        ([ppo_file, "--kind", "ppo", "--hidden", "32,32,32,32,32"],
         "layer hidden_4/kernel is (32, 6) in ppo.params, (32, 32) for these sizes"),
        ([brax_saved["sac_file"][0], "--kind", "sac", "--hidden", "16,16,6", "--no-normalize"],
         "these sizes make layer hidden_3 (6, 6), which sac.params lacks (it has hidden_0 11x16, hidden_1 16x16, "
         "hidden_2 16x6)"),
        ([ppo_file], "is a file: a brax params file needs --kind ppo or --kind sac"),
        ([ppo_file, "--kind", "ppo", "--activation", "sine"], "unknown activation 'sine'"),
        ([ppo_file, "--kind", "ppo", "--hidden", "32,x"], "--hidden '32,x': give the policy's hidden layer sizes"),
        ([ppo_ckpt, "--hidden", "16,16"], "--hidden: for params files only"),
        ([ppo_ckpt, "--kind", "sac"], "--kind sac: "),
        ([ppo_ckpt.parent, "--step", "7"], "has no checkpoint of step 7"),
        ([tmp / "missing"], "no such file or folder"),
    ]


def test_refusals_leave_the_warehouse_untouched(brax_saved, tmp_path, capsys, monkeypatch):
    from retland.warehouse import Warehouse

    wh = tmp_path / "wh"
    Warehouse.open(wh)
    before = tree_digest(wh)
    for args, fragment in _bad_inputs(brax_saved, tmp_path):
        code, out, err = run_cli(capsys, monkeypatch, "import-policy", "brax", *args, "--env", ENV, "-w", wh)
        line = " ".join(err.split())
        assert code == 2, (args, out, err)
        assert line.startswith("error: ") and fragment in line, (args, line)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert tree_digest(wh) == before
    # none of them created a warehouse either
    code, _, err = run_cli(capsys, monkeypatch, "import-policy", "brax", tmp_path / "empty", "--env", ENV,
                           "-w", tmp_path / "never")
    assert code == 2 and not (tmp_path / "never").exists()


def test_refuses_another_envs_policy(brax_saved, tmp_path, capsys, monkeypatch):
    """A hopper policy (11 observations) offered as walker2d's (17)."""
    wh = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "import-policy", "brax", brax_saved["sac_ckpt"][0],
                             "--env", "walker2d", "--backend", "positional", "-w", wh)
    assert code == 2, out
    assert "the policy observes 11 values, walker2d (variant brax) observes 17" in " ".join(err.split())
    assert not wh.exists()


# ---------------------------------------------------------------- through the command line

CLI_OPTIONS = {
    "ppo_ckpt": [],
    "ppo_file": ["--kind", "ppo", "--normalize", "--step", "5"],
    "sac_ckpt": ["--kind", "sac", "--name", "sac16"],
    "sac_file": ["--kind", "sac", "--hidden", "16,16", "--no-normalize"],
}


@pytest.fixture(scope="module")
def imported(brax_saved, tmp_path_factory):
    """The four policies imported with `retland import-policy brax` into one warehouse
    (positional backend: cheap to build; the default is brax's, tested above)."""
    import sys

    from retland.cli.main import main

    wh = tmp_path_factory.mktemp("wh") / "wh"
    for label, options in CLI_OPTIONS.items():
        path = brax_saved[label][0]
        if label == "sac_ckpt":  # a relative path (orbax itself takes only absolute ones)
            path = path.relative_to(brax_saved["root"])
        argv = ["retland", "import-policy", "brax", str(path), "--env", ENV, "--backend",
                "positional", "-w", str(wh), *options]
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(brax_saved["root"])
            mp.setattr(sys, "argv", argv)
            try:
                main()
            except SystemExit as exc:
                assert not exc.code, (label, exc.code)
    from retland.warehouse import Warehouse

    rows = Warehouse.open(wh, create=False).query(
        "SELECT run_id, r.algo, c.step, r.source, r.backend, r.variant FROM runs r JOIN checkpoints c "
        "USING (run_id) ORDER BY r.created_at, run_id")
    return wh, rows


def test_cli_import_records_the_runs(imported):
    _, rows = imported
    assert rows["algo"].to_list() == ["brax_ppo", "brax_ppo", "sac16", "brax_sac"]
    assert rows["step"].to_list() == [CKPT_STEP, 5, CKPT_STEP, 0]
    assert set(rows["source"]) == {"added"} and set(rows["variant"]) == {"brax"}
    assert set(rows["backend"]) == {"positional"}


def test_stored_policy_equals_brax_bit_for_bit(brax_saved, imported):
    """What the warehouse holds (orbax params, JSON keywords), read back and run as
    retland runs it, equals brax's deterministic inference on hopper observations."""
    import jax

    import retland
    from retland.agents import get_agent

    wh, rows = imported
    obs = brax_saved["obs"]
    key = jax.random.PRNGKey(0)
    for label, run_id, step in zip(CLI_OPTIONS, rows["run_id"], rows["step"]):
        _, make_inference, params = brax_saved[label]
        ckpt = retland.load_checkpoint(retland.Warehouse.open(wh, create=False), run_id, step)
        policy = get_agent(ckpt.algo, ckpt.config).policy

        def theirs(p, o):
            return make_inference(p, deterministic=True)(o, key)[0]

        batch = jax.jit(jax.vmap(policy, in_axes=(None, 0)))(ckpt.state, obs)
        assert np.array_equal(np.asarray(batch), np.asarray(jax.jit(jax.vmap(theirs, in_axes=(None, 0)))(params, obs)))
        single = np.stack([jax.jit(policy)(ckpt.state, o) for o in obs[:3]])
        assert np.array_equal(single, np.stack([jax.jit(theirs)(params, o) for o in obs[:3]])), label


def test_sample_an_imported_run(imported, capsys, monkeypatch):
    """8 gaussian samples of horizon 20 with `retland sample`; their statistics exist."""
    from retland.warehouse import Warehouse

    wh, rows = imported
    run_id = rows["run_id"][0]
    code, out, err = run_cli(capsys, monkeypatch, "sample", "--run", run_id, "--operator", "gaussian",
                             "--samples", 8, "--horizon", 20, "--no-progress", "-w", wh)
    assert code == 0, err
    assert "wrote 8 rows" in out
    stats = Warehouse.open(wh, create=False).query(
        "SELECT n, mean, std FROM distribution_stats WHERE run_id = ? AND operator_id LIKE 'gaussian%'", [run_id])
    assert stats["n"].to_list() == [8]
    assert np.isfinite(stats["mean"][0]) and stats["std"][0] >= 0
