"""The baseline: what a user would otherwise write and run from cron.

Every run re-lists the whole 30-day window (``GET /v1/products/tasks``, 50 per page, all
pages), and posts each ``FAILED`` task it has not posted before to a Slack webhook, one
message per task, remembering posted ids in a JSON file. No checkpoint, no grouping, no
rate limiting, no retries.

    python bench/naive_poller.py --base-url URL --api-key KEY --webhook URL --seen FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx


def list_window(client: httpx.Client, base_url: str) -> list[dict[str, object]]:
    begin = (datetime.now(tz=UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    params: dict[str, str] = {"beginReceivedTime": begin, "limit": "50"}
    tasks: list[dict[str, object]] = []
    while True:
        response = client.get(f"{base_url}/v1/products/tasks", params=params)
        response.raise_for_status()
        body = response.json()
        tasks.extend(body.get("tasks") or [])
        cursor = (body.get("nextPage") or {}).get("startingAfter")
        if not cursor:
            return tasks
        params = {"beginReceivedTime": begin, "limit": "50", "startingAfter": cursor}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--webhook", required=True)
    parser.add_argument("--seen", type=Path, required=True)
    parser.add_argument("--no-post", action="store_true", help="record failures without posting")
    args = parser.parse_args()
    seen: set[str] = set(json.loads(args.seen.read_text())) if args.seen.exists() else set()
    posted = 0
    with httpx.Client(auth=(args.api_key, ""), timeout=30) as client:
        for task in list_window(client, args.base_url):
            task_id = str(task.get("taskId"))
            if task.get("taskStatus") != "FAILED" or task_id in seen:
                continue
            if not args.no_post:
                text = f"Task {task_id} ({task.get('requestType')}) FAILED"
                client.post(args.webhook, json={"text": text})
                posted += 1
            seen.add(task_id)
    args.seen.write_text(json.dumps(sorted(seen)))
    print(json.dumps({"posted": posted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
