"""The `cluster` config section: where the Ray cluster is and how many workers the streams share.

Plain settings, no Ray import: a run without `--ray` never loads Ray.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ..settings import Settings

LOCAL = "local"
"""`cluster.address` value that starts a Ray cluster of this machine's own for the run."""


class ClusterSettings(Settings):
    """Scale-out on Ray (cluster/): config section `cluster`; `--ray [ADDRESS]` and `--workers N` set it."""

    address: str | None = Field(
        None,
        description="null: one process, no Ray. 'local': a Ray cluster on this machine for the run; "
        "'auto': the cluster this machine belongs to (ray start); HOST:PORT or ray://HOST:10001: that cluster",
    )
    workers: int = Field(2, ge=1, le=4096, description="Ray actors sharing the streams, each loading the model once")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker reserves on its node (fractions allowed)")
    gpus_per_worker: float = Field(
        0.0, ge=0, description="GPUs each worker reserves (0.5: two workers share one GPU; 0: CPU workers)"
    )
    connect_timeout_s: float = Field(
        15.0, gt=0, description="seconds an address may take to answer (the workers then get minutes to load the model)"
    )

    @field_validator("address")
    @classmethod
    def _an_address(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("give an address (HOST:PORT, ray://HOST:10001, auto or local), or null for no Ray")
        return v
