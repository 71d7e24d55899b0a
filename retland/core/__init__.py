"""JAX building blocks every stage shares: tasks, networks, the rollout, replay, caches."""
