"""The intake buffer on Redis: where receivers commit customer messages when `REDIS_URL` is set.

With Redis configured the receiver's one write is a single Lua call: dedupe on Chatwoot's message
id and on `X-Chatwoot-Delivery` (`SET NX` with a day's expiry) and `LPUSH` the message onto the
intake list. Workers move entries to a claim list of their own (`BLMOVE`, Redis's reliable-queue
pattern), record them in the ledger, and delete the claim list only once every entry in it is
recorded. A worker that dies holding a claim stops refreshing its liveness key; any other worker
then moves the claimed entries back onto the intake list. Recording is idempotent (the ledger
dedupes on message id), so an entry recorded twice after a crash still makes one job.

Durability is Redis's: run it with `appendonly yes` and `appendfsync always` (docs/deployment.md;
`ai-broker doctor` checks). All keys share the `{intake}` hash tag, so the script's keys live in one
slot on a Redis Cluster too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from app.domain.intake_entry import BufferedInbound, PushOutcome
from app.ports.intake_buffer import IntakeBufferError

log = logging.getLogger(__name__)

DEDUPE_TTL_S = 86_400
# A claim whose owner has not been seen for this long is taken back; the owner refreshes its
# liveness every KEEP_ALIVE_EVERY_S.
CLAIM_LIVENESS_S = 10
KEEP_ALIVE_EVERY_S = 2.0

# KEYS: message-id key, delivery-id key (or ""), intake list. ARGV: ttl, entry.
_PUSH = """
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 'delivery_already_received'
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'message_already_received'
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
if KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
end
redis.call('LPUSH', KEYS[3], ARGV[2])
return 'accepted'
"""


# KEYS: intake list, claim list. ARGV: how many at most.
_CLAIM = """
local moved = {}
for i = 1, tonumber(ARGV[1]) do
  local entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not entry then break end
  moved[i] = entry
end
return moved
"""


@dataclass(frozen=True)
class Claimed:
    """One claimed entry: its raw form (to remove it) and, when readable, the message."""

    raw: bytes
    entry: BufferedInbound | None
    error: str | None = None


class RedisIntake:
    def __init__(self, client: redis.Redis, *, namespace: str = "ai-broker") -> None:
        self._redis = client
        self._prefix = f"{namespace}:{{intake}}"
        self._push = client.register_script(_PUSH)
        self._claim = client.register_script(_CLAIM)

    # -- keys --------------------------------------------------------------------------------
    @property
    def pending_key(self) -> str:
        return f"{self._prefix}:pending"

    @property
    def rejected_key(self) -> str:
        return f"{self._prefix}:rejected"

    @property
    def consumers_key(self) -> str:
        """The set of consumers that may hold a claim: what recovery looks through."""
        return f"{self._prefix}:consumers"

    def _claim_key(self, consumer: str) -> str:
        return f"{self._prefix}:claimed:{consumer}"

    def _alive_key(self, consumer: str) -> str:
        return f"{self._prefix}:alive:{consumer}"

    # -- receiver side -------------------------------------------------------------------------
    def push(self, entry: BufferedInbound) -> PushOutcome:
        """Dedupe and enqueue atomically. Raises IntakeBufferError when Redis cannot take it."""
        message_key = f"{self._prefix}:seen:message:{entry.message.message_id}"
        delivery_key = ""
        if entry.delivery_id:
            delivery_key = f"{self._prefix}:seen:delivery:{entry.delivery_id}"
        try:
            outcome = self._push(
                keys=[message_key, delivery_key, self.pending_key],
                args=[DEDUPE_TTL_S, entry.encode()],
            )
        except redis.RedisError as exc:
            raise IntakeBufferError(f"{type(exc).__name__}: {exc}") from exc
        return PushOutcome(outcome.decode() if isinstance(outcome, bytes) else outcome)

    # -- worker side ---------------------------------------------------------------------------
    def claim(self, consumer: str, *, limit: int, block_s: float) -> list[Claimed]:
        """Move up to `limit` entries, oldest first, onto this consumer's claim; when there are
        none, wait up to `block_s` for one. Two round trips when idle, one under load."""
        claim_key = self._claim_key(consumer)
        raws = self._claim(keys=[self.pending_key, claim_key], args=[limit])
        if not raws:
            # Redis takes a fractional timeout; redis-py's stubs say int.
            first = self._redis.blmove(
                self.pending_key,
                claim_key,
                block_s,  # type: ignore[arg-type]
                "RIGHT",
                "LEFT",
            )
            raws = [] if first is None else [first]
        return [_claimed(raw) for raw in raws]

    def held(self, consumer: str) -> list[Claimed]:
        """What this consumer claimed and has not released, oldest first."""
        raws = self._redis.lrange(self._claim_key(consumer), 0, -1)
        return [_claimed(raw) for raw in reversed(raws)]

    def release(self, consumer: str) -> None:
        """Every entry of this consumer's claim is in the ledger: drop the claim."""
        self._redis.delete(self._claim_key(consumer))

    def reject(self, consumer: str, claimed: Claimed) -> None:
        """Park an entry no version of this worker can read, for an operator to look at."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpush(self.rejected_key, claimed.raw)
        pipe.lrem(self._claim_key(consumer), 1, claimed.raw)  # type: ignore[arg-type]
        pipe.execute()

    def keep_alive(self, consumer: str) -> None:
        """Call before claiming, then at least every KEEP_ALIVE_EVERY_S."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._alive_key(consumer), "1", ex=CLAIM_LIVENESS_S)
        pipe.sadd(self.consumers_key, consumer)
        pipe.execute()

    def retire(self, consumer: str) -> None:
        """A clean shutdown: give back what is still claimed and stop being alive."""
        self._give_back(consumer)
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(self._alive_key(consumer))
        pipe.srem(self.consumers_key, consumer)
        pipe.execute()

    def recover_orphans(self) -> int:
        """Move the claims of consumers no longer alive back onto the intake list."""
        moved = 0
        for member in self._redis.smembers(self.consumers_key):
            consumer = member.decode() if isinstance(member, bytes) else str(member)
            if self._redis.exists(self._alive_key(consumer)):
                continue
            returned = self._give_back(consumer)
            # A consumer that was only slow adds itself again at its next keep-alive.
            self._redis.srem(self.consumers_key, consumer)
            if returned:
                log.warning(
                    "intake: %d message(s) claimed by %s, which stopped, returned to the queue",
                    returned,
                    consumer,
                )
            moved += returned
        return moved

    def _give_back(self, consumer: str) -> int:
        moved = 0
        # One atomic move per entry, so two workers recovering the same claim never copy one;
        # newest first onto the popping end, so the oldest is taken again first.
        while self._redis.lmove(self._claim_key(consumer), self.pending_key, "LEFT", "RIGHT"):
            moved += 1
        return moved

    def depth(self) -> int:
        """Messages accepted by a receiver and not yet taken by a worker."""
        return int(self._redis.llen(self.pending_key))

    def rejected(self) -> int:
        return int(self._redis.llen(self.rejected_key))

    def replay_rejected(self) -> int:
        """Put every parked entry back on the intake list, oldest first, once its cause is fixed.
        Recording is idempotent, so an entry that was in fact recorded makes no second job.
        IntakeBufferError when Redis fails part-way (what moved stays moved)."""
        moved = 0
        try:
            while self._redis.lmove(self.rejected_key, self.pending_key, "RIGHT", "LEFT"):
                moved += 1
        except redis.RedisError as exc:
            raise IntakeBufferError(f"{type(exc).__name__}: {exc}; {moved} moved") from exc
        return moved

    def parked(self, limit: int = 50) -> list[Claimed]:
        """The `limit` oldest parked entries, oldest first, for an operator to look at; moves
        nothing. Each is decoded as a worker would decode it, so an entry no version can read is
        listed with its error instead of raising. The entries include the customer's message:
        callers show only what identifies one (ids, time, size)."""
        if limit <= 0:
            return []
        # Parking pushes on the left, so the oldest are the rightmost.
        raws = self._redis.lrange(self.rejected_key, -limit, -1)
        return [_claimed(raw) for raw in reversed(raws)]


def _claimed(raw: bytes | str) -> Claimed:
    raw = raw.encode() if isinstance(raw, str) else raw
    try:
        return Claimed(raw, BufferedInbound.decode(raw))
    except ValueError as exc:
        return Claimed(raw, None, str(exc))
