"""The reference design's worker, for comparison: `processConversationJob` of the TypeScript
plan this project ports.

The plan runs a BullMQ worker with `concurrency: WORKER_CONCURRENCY` (3) whose job computes the
human-like delay with `analyzeMessageUrgency`, *sleeps it inside the worker*, generates the reply
and posts it to Chatwoot. Here that is a Huey consumer (SqliteHuey, 3 thread workers, polling as
tightly as our worker does) whose task does the same with this repository's own pieces:
`analyze_message_urgency`, `time.sleep(delay)`, `OpenAIReplyGenerator` over the real `openai`
client and `ChatwootClient.send_message`. The plan's Supabase calls (mark busy, metrics, release
capacity) are left out, which only flatters the reference.

The benchmark starts this file as its own process and enqueues jobs with `build_queue(path)`:

    python bench/reference_design.py --queue PATH --chatwoot-url URL --llm-url URL --ready PATH
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from huey import SqliteHuey

from app.adapters.chatwoot import ChatwootClient
from app.adapters.http_pool import PooledHttp
from app.adapters.llm import OpenAIReplyGenerator
from app.domain.events import JOB_MARKER_KEY
from app.domain.personas import fallback_reply, persona_by_slug
from app.domain.prompt import build_system_prompt
from app.domain.urgency import analyze_message_urgency

QUEUE_NAME = "reference-broker"
PLAN_WORKER_CONCURRENCY = 3

Job = dict[str, Any]


def build_queue(path: Path, handler: Callable[[Job], None] | None = None) -> tuple[SqliteHuey, Any]:
    """The reference queue and its one task; producers pass no handler (they never run it)."""
    huey = SqliteHuey(QUEUE_NAME, filename=str(path), results=False, utc=True)

    def process_conversation_job(job: Job) -> None:
        if handler is None:
            raise RuntimeError("this queue was built for enqueueing only")
        handler(job)

    # Huey names a task after its module; the producer imports this file as
    # `bench.reference_design`, the consumer runs it as `__main__`. One name for both.
    process_conversation_job.__module__ = QUEUE_NAME
    return huey, huey.task(name="process_conversation_job")(process_conversation_job)


class ReferenceWorker:
    """processConversationJob, minus the Supabase bookkeeping."""

    def __init__(self, chatwoot: ChatwootClient, generator: OpenAIReplyGenerator) -> None:
        self._chatwoot = chatwoot
        self._generator = generator

    def process(self, job: Job) -> None:
        persona = persona_by_slug(job["broker_id"])
        urgency = analyze_message_urgency(job["message"], persona, jitter=random.random())
        time.sleep(urgency.response_delay_s)  # STEP 3: wait for natural timing, in the worker
        reply = self._generator.generate(
            system_prompt=build_system_prompt(persona, None),
            history=[],
            customer_messages=[job["message"]],
            fallback_text=fallback_reply(persona),
        )
        self._chatwoot.send_message(
            job["conversation_id"], reply.text, content_attributes={JOB_MARKER_KEY: job["job_id"]}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=Path, required=True)
    parser.add_argument("--chatwoot-url", required=True)
    parser.add_argument("--account-id", type=int, default=3)
    parser.add_argument("--api-token", default="sandbox-user-token")
    parser.add_argument("--bot-token", default="sandbox-bot-token")
    parser.add_argument("--llm-url", required=True)
    parser.add_argument("--ready", type=Path, required=True, help="file written once consuming")
    parser.add_argument("--workers", type=int, default=PLAN_WORKER_CONCURRENCY)
    args = parser.parse_args()

    chatwoot = ChatwootClient(
        PooledHttp(args.chatwoot_url, timeout_s=10.0, connect_timeout_s=5.0, max_idle=16),
        base_url=args.chatwoot_url,
        account_id=args.account_id,
        api_token=args.api_token,
        bot_token=args.bot_token,
    )
    generator = OpenAIReplyGenerator(
        openai.OpenAI(api_key="sandbox-key", base_url=args.llm_url, max_retries=0, timeout=20.0),
        model="gpt-5-mini",
    )
    worker = ReferenceWorker(chatwoot, generator)
    huey, _ = build_queue(args.queue, worker.process)
    consumer = huey.create_consumer(
        workers=args.workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.05,
        backoff=1.15,
        max_delay=0.5,
    )
    args.ready.write_text("ready")
    consumer.run()


if __name__ == "__main__":
    main()
