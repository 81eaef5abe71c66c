"""Scale-out on Ray (`--ray`): streams spread over worker actors, each with one model, surviving a worker's death.

`build_cluster_pipeline(config)` gives a `ClusterPipeline`, run like a Pipeline. Only
`settings` is imported here: Ray is imported when a cluster run starts, never otherwise.
"""

from .settings import ClusterSettings

__all__ = ["ClusterSettings"]
