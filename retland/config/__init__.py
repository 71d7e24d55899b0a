"""What retland can be asked to run, below the code that runs it; imports no JAX.

- `registry`: the algorithms, tasks, task rules (variants) and physics backends, and the
  checks that pair them. A new task or algorithm is added here (and in its own module).
- `agents`: each algorithm's hyperparameters (defaults = the paper's Table 1).
- `settings`: what each sampling and analysis command is asked to do, with its defaults
  and help texts.

Everything else (core, agents, train, purd, analyses, report, study, cli) reads these.
"""
