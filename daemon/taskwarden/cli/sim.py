"""``taskwarden simulate``: the vendor API simulator as a standalone server."""

from __future__ import annotations

import click

from taskwarden.cli.common import run


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8089, show_default=True)
@click.option("--api-key", default="sim-api-key", show_default=True, help="Accepted API key.")
@click.option(
    "--tasks",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Generate this many tasks over the last 29 days at start.",
)
def simulate(host: str, port: int, api_key: str, tasks: int) -> None:
    """Run the Digital River / Elastic Path API simulator until interrupted.

    Digital River: GET /v1/products/tasks[/{taskId}]. Elastic Path: POST /oauth/access_token
    (client sim-client-id / sim-client-secret), GET /pcm/jobs[/{id}[/errors]].
    Control: POST /_sim/tasks, /_sim/tasks/{id}/status, /_sim/generate, /_sim/faults,
    /_sim/clock; GET /_sim/stats.
    """
    from taskwarden.simulator.standalone import serve_forever

    run(lambda _out: serve_forever(host=host, port=port, api_key=api_key, tasks=tasks))
