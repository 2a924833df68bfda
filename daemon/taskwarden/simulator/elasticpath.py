"""Elastic Path Commerce Cloud PCM jobs, served by the same simulator (and faults).

* ``POST /oauth/access_token`` (client credentials) issues tokens that expire after
  ``token_lifetime`` seconds of the simulator's clock; `revoke_tokens` invalidates them all.
* ``GET /pcm/jobs`` lists newest first (or oldest first, or unsorted: ``order``) with
  ``page[limit]`` (1..100, default 25) and ``page[offset]``, ``links.next`` and
  ``meta.results.total``; ``GET /pcm/jobs/{id}`` and ``GET /pcm/jobs/{id}/errors``.
* Timestamps are written as the real service does, inconsistently: with and without ``Z``,
  with two or three fractional digits.
* Errors use the documented ``{"errors": [{"status", "title", "detail"}]}`` shape.
"""

from __future__ import annotations

import secrets
import uuid
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from taskwarden.timeutil import from_epoch_ms

if TYPE_CHECKING:
    from taskwarden.simulator.server import Simulator

EP_JOB_TYPES = (
    "child-products",
    "product-import",
    "product-export",
    "hierarchy-duplicate",
    "price-import",
)
EP_OPEN = ("pending", "started")
MAX_LIMIT = 100
DEFAULT_LIMIT = 25


def ep_error(status: int, title: str, detail: str | None = None) -> web.Response:
    error: dict[str, str] = {"status": str(status), "title": title}
    if detail:
        error["detail"] = detail
    return web.json_response({"errors": [error]}, status=status)


def ep_time(ms: int, style: int) -> str:
    """Three spellings seen from the real API: ``.142Z``, ``.07Z`` and no zone at all."""
    moment = from_epoch_ms(ms)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = f"{moment.microsecond // 1000:03d}"
    if style % 3 == 0:
        return f"{base}.{millis}Z"
    if style % 3 == 1:
        return f"{base}.{millis[:2]}Z"
    return f"{base}.{millis}"


@dataclass(slots=True)
class SimJob:
    job_id: str
    job_type: str
    status: str
    created_ms: int
    updated_ms: int
    started_ms: int | None = None
    completed_ms: int | None = None
    errors: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def json(self, style: int) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "created_at": ep_time(self.created_ms, style),
            "updated_at": ep_time(self.updated_ms, style + 1),
            "type": self.job_type,
            "status": self.status,
        }
        if self.started_ms is not None:
            attributes["started_at"] = ep_time(self.started_ms, style + 2)
        if self.completed_ms is not None:
            attributes["completed_at"] = ep_time(self.completed_ms, style)
        return {"type": "pim-job", "id": self.job_id, "attributes": attributes, "meta": self.meta}


class ElasticPathJobs:
    """The job table and the OAuth client of one simulated store."""

    def __init__(
        self,
        sim: Simulator,
        *,
        client_id: str = "sim-client-id",
        client_secret: str = "sim-client-secret",
        token_lifetime: int = 3600,
    ) -> None:
        self.sim = sim
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.jobs: dict[str, SimJob] = {}
        self._newest_first: list[SimJob] = []
        self._dirty = False
        self.tokens: dict[str, int] = {}
        """Issued token → expiry (epoch ms, simulator clock)."""
        self.tokens_issued = 0
        self.order: Literal["newest_first", "oldest_first", "unsorted"] = "newest_first"
        """The listing's order: the docs state none, and their example is unsorted."""

    # --- control ------------------------------------------------------------------------

    def add_job(
        self,
        *,
        status: str = "pending",
        job_type: str = "product-import",
        created_ms: int | None = None,
        meta: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> SimJob:
        created = created_ms if created_ms is not None else self.sim.now_ms()
        job = SimJob(
            job_id=job_id or str(uuid.UUID(int=self.sim.rng.getrandbits(128), version=4)),
            job_type=job_type,
            status=status,
            created_ms=created,
            updated_ms=created,
            meta=meta
            if meta is not None
            else {"x_request_id": str(uuid.UUID(int=self.sim.rng.getrandbits(128), version=4))},
        )
        self._finish(job, status, created)
        self.jobs[job.job_id] = job
        self._dirty = True
        return job

    def set_status(self, job_id: str, status: str, *, errors: list[str] | None = None) -> SimJob:
        job = self.jobs[job_id]
        now = self.sim.now_ms()
        job.status = status
        job.updated_ms = now
        self._finish(job, status, now)
        if errors is not None:
            job.errors = errors
        return job

    def remove(self, job_id: str) -> None:
        del self.jobs[job_id]
        self._dirty = True

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    @staticmethod
    def _finish(job: SimJob, status: str, at_ms: int) -> None:
        if status != "pending" and job.started_ms is None:
            job.started_ms = at_ms
        job.completed_ms = None if status in EP_OPEN else at_ms

    def _ordered(self) -> list[SimJob]:
        if self._dirty:
            self._newest_first = sorted(
                self.jobs.values(), key=lambda j: (j.created_ms, j.job_id), reverse=True
            )
            self._dirty = False
        if self.order == "oldest_first":
            return self._newest_first[::-1]
        if self.order == "unsorted":  # a stable shuffle: the same listing every time
            return sorted(self._newest_first, key=lambda j: zlib.crc32(j.job_id.encode()))
        return self._newest_first

    # --- HTTP ---------------------------------------------------------------------------

    def install(self, _sim: Simulator, app: web.Application) -> None:
        app.router.add_post("/oauth/access_token", self._token, name="ep.token")
        app.router.add_get("/pcm/jobs", self._list, name="ep.list")
        app.router.add_get("/pcm/jobs/{job_id}", self._detail, name="ep.detail")
        app.router.add_get("/pcm/jobs/{job_id}/errors", self._errors, name="ep.errors")

    def _denied(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= self.sim.now_ms():
            return ep_error(401, "Unauthorized", "The access token is missing, invalid or expired")
        return None

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return ep_error(422, "Failed Validation", "grant_type must be client_credentials")
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return ep_error(401, "Unauthorized", "Invalid client credentials")
        token = secrets.token_hex(20)
        expires_ms = self.sim.now_ms() + self.token_lifetime * 1000
        self.tokens[token] = expires_ms
        self.tokens_issued += 1
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "identifier": "client_credentials",
                "expires_in": self.token_lifetime,
                "expires": expires_ms // 1000,
            }
        )

    async def _list(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            limit = int(request.query.get("page[limit]", DEFAULT_LIMIT))
            offset = int(request.query.get("page[offset]", 0))
        except ValueError:
            return ep_error(400, "Bad Request", "page[limit] and page[offset] must be integers")
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return ep_error(
                400, "Bad Request", f"page[limit] must be 1..{MAX_LIMIT}, page[offset] >= 0"
            )
        ordered = self._ordered()
        page = ordered[offset : offset + limit]
        base = f"{self.sim.base_url}/pcm/jobs?page[limit]={limit}"
        links: dict[str, str | None] = {
            "current": f"{base}&page[offset]={offset}",
            "first": f"{base}&page[offset]=0",
            "next": f"{base}&page[offset]={offset + limit}"
            if offset + limit < len(ordered)
            else None,
        }
        return web.json_response(
            {
                "data": [job.json(offset + i) for i, job in enumerate(page)],
                "links": links,
                "meta": {
                    "page": {"limit": limit, "offset": offset, "total": len(ordered)},
                    "results": {"total": len(ordered)},
                },
            }
        )

    async def _detail(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return ep_error(404, "Not Found")
        return web.json_response({"data": job.json(0)})

    async def _errors(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return ep_error(404, "Not Found")
        return web.json_response(
            {
                "data": [
                    {
                        "type": "pim-job-error",
                        "id": f"{job.job_id}-{i}",
                        "attributes": {"message": m},
                    }
                    for i, m in enumerate(job.errors)
                ]
            }
        )


def install_elasticpath(sim: Simulator, **kwargs: Any) -> ElasticPathJobs:
    """Add the PCM jobs endpoints to ``sim`` (before it starts serving)."""
    jobs = ElasticPathJobs(sim, **kwargs)
    sim.extensions.append(jobs.install)
    return jobs
