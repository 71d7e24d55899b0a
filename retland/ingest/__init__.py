"""What comes into a warehouse from outside retland's own training and sampling.

    own.py       your own JAX policy and your own update: `add_policy` stores a policy
                 as an added run (runs.source 'added') with one checkpoint,
                 `sample_update` samples a checkpoint's post-update returns under your
                 update (`retland.add_policy`, `retland.sample_update`)
    brax.py      policies trained with brax.training (PPO, SAC), read from brax's
                 checkpoint folders or params files and added as runs through
                 `add_policy` (`retland import-policy brax`)
    returns.py   post-update returns computed elsewhere, from a CSV or Parquet file:
                 runs of source 'imported', operators of kind 'imported'
                 (`retland import-returns`)

Each module checks everything it reads before the first write and then writes through
`Warehouse.append`, like the rest of retland. Nothing is imported here: each module is
imported on its own, so the command line's start-up stays free of JAX.

The apply functions that added runs name by import path are not here: warehouses store
those paths, so the functions stay where the paths point (`retland.policies:mlp_apply`,
`retland.brax_import:deterministic_apply`).
"""
