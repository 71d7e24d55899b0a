"""What comes into a warehouse from outside retland's own training and sampling.

    returns.py   post-update returns computed elsewhere, from a CSV or Parquet file:
                 runs of source 'imported', operators of kind 'imported'
                 (`retland import-returns`)

Each module checks everything it reads before the first write and then writes through
`Warehouse.append`, like the rest of retland. Nothing is imported here: each module is
imported on its own, so the command line's start-up stays free of JAX.
"""
