"""Fleet replay: many bags, one offline replay task each, on a local or an existing Dask cluster.

`inputs` (which bags, where their outputs go), `task` (one bag's replay), `dask_cluster` (the only
Dask code), `report` (the fleet's figures), `run.run_fleet` (what `casseg-replay` runs for several bags).
"""
