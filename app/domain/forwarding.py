"""What goes to the legacy n8n workflow with a customer's message: Chatwoot's body as it came,
and these of its headers (its signature, timestamp and delivery id, so a workflow that checks the
signature accepts it)."""

from __future__ import annotations

from collections.abc import Mapping

# Chatwoot's request headers that n8n gets as they came; hop-by-hop ones (Host,
# Content-Length, Connection) are the HTTP client's to set.
FORWARDED_HEADER_PREFIX = "x-chatwoot-"
FORWARDED_HEADERS = ("content-type", "user-agent")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of Chatwoot's request that go to n8n with its body."""
    return {
        name: value
        for name, value in headers.items()
        if name.lower().startswith(FORWARDED_HEADER_PREFIX) or name.lower() in FORWARDED_HEADERS
    }
