"""brax.training's deterministic policy: the apply function of runs imported from brax.

`retland import-policy brax` reads brax's files (retland.ingest.brax) and adds each
policy as a run whose apply is `retland.brax_import:deterministic_apply`. Warehouses
keep that path in the run's config, every later process imports the function by it,
and the program store (retland.core.programs) keys its traced programs on the source
file of the path's module. So the function, and the network it builds, stay in this
module: a move would leave those runs a path that no longer imports (or, with a
re-export, programs keyed on a file that no longer holds the code).

What it computes is brax's *deterministic* policy: observations normalised with brax's
running statistics (when the agent normalised them), the policy MLP, and the mode of
the action distribution (tanh of the mean for brax's default tanh-normal, the mean
itself for the plain normal one), with brax's own modules, so its action equals
`make_inference_fn(params, deterministic=True)`'s bit for bit.

This module imports jax and brax only inside its functions, so the command line can
read its constants at start-up.
"""
from __future__ import annotations

import contextlib
import functools
import io
import warnings

KINDS: tuple[str, ...] = ("ppo", "sac")


class BraxImportError(ValueError):
    """A file or folder that cannot be read as a brax.training policy (one line)."""


# ---------------------------------------------------------------- deterministic policy

def quiet_import():
    """brax.training's modules, without mujoco's 'Failed to import warp' lines."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brax.training import distribution, networks
        from brax.training.acme import running_statistics
    return distribution, networks, running_statistics


@functools.lru_cache(maxsize=None)
def policy_network(obs_size: int, action_size: int, hidden_sizes: tuple[int, ...], activation: str,
                   normalize: bool, distribution_type: str, layer_norm: bool, noise_std_type: str,
                   init_noise_std: float, state_dependent_std: bool, mean_clip_scale: float | None):
    """brax's policy network and action distribution for these settings, built by
    brax.training.networks.make_policy_network as make_ppo_networks / make_sac_networks do."""
    distribution, networks, running_statistics = quiet_import()
    if activation not in networks.ACTIVATION:
        raise BraxImportError(f"unknown activation {activation!r}: brax knows "
                              f"{', '.join(sorted(networks.ACTIVATION))}")
    if distribution_type == "tanh_normal":
        dist = distribution.NormalTanhDistribution(event_size=action_size)
    elif distribution_type == "normal":
        dist = distribution.NormalDistribution(event_size=action_size)
    else:
        raise BraxImportError(f"unsupported action distribution {distribution_type!r}: brax's are tanh_normal "
                              "and normal")
    kwargs = dict(hidden_layer_sizes=hidden_sizes, activation=networks.ACTIVATION[activation],
                  layer_norm=layer_norm, distribution_type=distribution_type, noise_std_type=noise_std_type,
                  init_noise_std=init_noise_std, state_dependent_std=state_dependent_std)
    if mean_clip_scale is not None:  # PPO's option; make_policy_network's default is None
        kwargs["mean_clip_scale"] = mean_clip_scale
    # checkpoint.get_network's preprocessing: brax's normalize, or the identity
    preprocess = running_statistics.normalize if normalize else (lambda x, y: x)
    net = networks.make_policy_network(dist.param_size, obs_size, preprocess_observations_fn=preprocess, **kwargs)
    return net, dist


def deterministic_apply(params, obs, *, kind: str, hidden_sizes, activation: str, normalize_observations: bool,
                        action_size: int, obs_mean=None, obs_std=None, distribution_type: str = "tanh_normal",
                        layer_norm: bool = False, noise_std_type: str = "scalar", init_noise_std: float = 1.0,
                        state_dependent_std: bool = False, mean_clip_scale: float | None = None):
    """brax.training's deterministic action for one observation [O] (or a batch [..., O]).

    `params` is brax's policy params; the keywords are the network's settings as a
    checkpoint's config records them, and brax's running statistics of observations
    (`obs_mean`, `obs_std`, used when `normalize_observations`). The result is what
    `make_inference_fn(params, deterministic=True)` of brax's `kind` agent returns:
    the distribution's mode after its postprocessing."""
    import jax
    import jax.numpy as jnp

    if kind not in KINDS:
        raise BraxImportError(f"unknown brax agent {kind!r}: choose one of {', '.join(KINDS)}")
    _, _, running_statistics = quiet_import()
    net, dist = policy_network(int(obs.shape[-1]), int(action_size), tuple(int(h) for h in hidden_sizes),
                               activation, bool(normalize_observations), distribution_type, bool(layer_norm),
                               noise_std_type, float(init_noise_std), bool(state_dependent_std),
                               None if mean_clip_scale is None else float(mean_clip_scale))
    stats = None
    if normalize_observations:
        # Statistics from the keywords are compile-time constants, and XLA would turn
        # (x - mean) / std into (x + -mean) * (1 / std), a last-bit change. The barrier
        # keeps brax's own subtraction and division, as in its training and evaluation,
        # where the statistics are runtime values.
        mean, std = jax.lax.optimization_barrier((jnp.asarray(obs_mean, jnp.float32),
                                                  jnp.asarray(obs_std, jnp.float32)))
        stats = running_statistics.NestedMeanStd(mean=mean, std=std)
    return dist.mode(net.apply(stats, params, obs))
