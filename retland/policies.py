"""Ready-made policy functions for added runs, named by import path.

An added run keeps its policy's `apply` as "package.module:function" in its config
(`retland.add_policy`, retland.ingest.own), and every later process imports it by that
path; the program store (retland.core.programs) keys its traced programs on the source
file of that module. So a function here stays here, defined in this module: warehouses
store `retland.policies:mlp_apply`, and a move would leave them a path that no longer
imports (or, with a re-export, programs keyed on a file that no longer holds the code).

`mlp_apply` is a generic MLP policy over a list of Dense layers, for policies that are
plain MLPs (use it as apply="retland.policies:mlp_apply").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["mlp_apply"]

ACTIVATIONS = ("tanh", "relu", "swish", "gelu", "elu")


def mlp_apply(params, obs, *, activation: str = "tanh"):
    """A plain MLP policy: params = [{"kernel": [in, out], "bias": [out]}, ...] (one dict
    per Dense layer); every hidden layer is followed by `activation`, the last by tanh,
    so actions are in [-1, 1]."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp_apply: activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    act = {"tanh": jnp.tanh, "relu": jax.nn.relu, "swish": jax.nn.swish, "gelu": jax.nn.gelu,
           "elu": jax.nn.elu}[activation]
    x = obs
    for i, layer in enumerate(params):
        x = x @ layer["kernel"] + layer["bias"]
        x = act(x) if i < len(params) - 1 else jnp.tanh(x)
    return x
