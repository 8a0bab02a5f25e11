"""The OpenAPI 3.1 document of every route, served at GET /openapi.json.

Written by hand beside docs/api.md, which explains each route in prose; a test keeps the two and
the Flask routes in step (same paths and methods, same status codes per route)."""

from __future__ import annotations

from typing import Any

from app.domain.lead import (
    E164_PATTERN,
    EMAIL_PATTERN,
    EMPLOYMENT_TYPES,
    LOAN_TYPES,
    MAX_AGE,
    MAX_APPLICANTS,
    MAX_EMAIL_CHARS,
    MAX_LEAD_SCORE,
    MAX_MONTHLY_INCOME,
    MAX_NAME_CHARS,
    MAX_SESSION_ID_CHARS,
    MIN_AGE,
    PROPERTY_CATEGORIES,
)
from app.domain.rollout import GUARD_RANGES, MAX_ACTOR_CHARS, MAX_REASON_CHARS
from app.web.json_body import MAX_ARRAY_ITEMS, MAX_BODY_BYTES, MAX_DEPTH, MAX_STRING_CHARS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _invalid(description: str) -> dict[str, Any]:
    return _json(_ref("FieldErrors"), description)


# The errors every route with a JSON body can answer (app/web/context.py, app/web/errors.py).
_BODY_ERRORS = {
    "400": _error(
        "The body is not a JSON object, or breaks a limit: nesting over "
        f"{MAX_DEPTH} levels, a string over {MAX_STRING_CHARS:,} characters, an array over "
        f"{MAX_ARRAY_ITEMS:,} items, NaN, Infinity, 1e999 or an integer outside 64 bits "
        "(`field` names the value)."
    ),
    "413": _error(f"The body is over {MAX_BODY_BYTES:,} bytes (chunked or not)."),
    "415": _error("Content-Type is not application/json."),
}
_STORE_DOWN = {"500": _error("The store could not record the request; retry later.")}
_ADMIN_AUTH = {
    "401": _error("Authorization: Bearer <ADMIN_TOKEN> missing or wrong."),
    "403": _error("ADMIN_TOKEN is not set: the admin API is off."),
}

_GUARD_PROPERTIES: dict[str, Any] = {"enabled": {"type": "boolean"}} | {
    name: {
        "type": "integer" if name == "min_sample" else "number",
        "minimum": low,
        "maximum": high,
    }
    for name, (low, high) in GUARD_RANGES.items()
}

# A reason the audit can show: not blank, not a paste accident.
_REASON = {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS, "pattern": r"\S"}

# Who is behind the API call, for the audit ("admin-api:<actor>").
_ACTOR = {
    "type": ["string", "null"],
    "maxLength": MAX_ACTOR_CHARS,
    "description": "who is behind the call; the audit names `admin-api:<actor>`",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "a stable code"},
            "detail": {"type": "string", "description": "what to do"},
            "field": {"type": "string", "description": "the offending value's path"},
        },
    },
    "FieldErrors": {
        "type": "object",
        "required": ["error", "errors"],
        "properties": {
            "error": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    },
    "WebhookOutcome": {
        "type": "object",
        "required": ["status", "reason"],
        "properties": {
            "status": {"enum": ["accepted", "ignored", "duplicate"]},
            "reason": {"type": "string"},
            "job_id": {"type": "string"},
            "route": {"enum": ["new", "n8n"]},
        },
    },
    "ChatwootEvent": {
        "type": "object",
        "description": "A Chatwoot webhook payload (docs/chatwoot.md). message_created, "
        "conversation_updated and conversation_status_changed are acted on; any other object, "
        "with another event or none, is acknowledged as ignored so that Chatwoot does not retry.",
        "properties": {"event": {"description": "message_created, conversation_updated, ..."}},
    },
    "LeadForm": {
        "type": "object",
        "required": [
            "name",
            "email",
            "phone",
            "loanType",
            "actualIncomes",
            "actualAges",
            "employmentType",
        ],
        "properties": {
            "name": {"type": "string", "maxLength": MAX_NAME_CHARS, "pattern": r"\S"},
            "email": {
                "type": "string",
                "maxLength": MAX_EMAIL_CHARS,
                "pattern": f"^{EMAIL_PATTERN}$",
            },
            "phone": {
                "type": "string",
                "pattern": f"^{E164_PATTERN}$",
                "description": "E.164, e.g. +6591234567 (spaces, dots, hyphens and brackets "
                "between digits are also accepted and removed)",
            },
            "loanType": {"enum": list(LOAN_TYPES)},
            "propertyCategory": {"enum": [*PROPERTY_CATEGORIES, None]},
            "actualIncomes": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_APPLICANTS,
                "items": {"type": "number", "minimum": 0, "maximum": MAX_MONTHLY_INCOME},
            },
            "actualAges": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_APPLICANTS,
                "items": {"type": "integer", "minimum": MIN_AGE, "maximum": MAX_AGE},
            },
            "employmentType": {"enum": list(EMPLOYMENT_TYPES)},
            "leadScore": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_LEAD_SCORE},
            "sessionId": {"type": ["string", "null"], "maxLength": MAX_SESSION_ID_CHARS},
        },
    },
    "LeadResult": {
        "type": "object",
        "required": [
            "conversation_id",
            "contact_id",
            "broker",
            "reused",
            "greeting",
            "lead_score",
            "profile",
        ],
        "properties": {
            "conversation_id": {"type": "integer"},
            "contact_id": {"type": "integer"},
            "broker": {"type": "object"},
            "reused": {"type": "boolean"},
            "greeting": {"enum": ["queued", "skipped"]},
            "lead_score": {"type": "integer", "minimum": 0, "maximum": 100},
            "profile": {
                "enum": ["saved", "kept"],
                "description": "kept: the submission did not repeat the e-mail and phone that "
                "wrote the conversation's profile, so the profile was not changed",
            },
        },
    },
    "Guard": {"type": "object", "properties": _GUARD_PROPERTIES, "additionalProperties": False},
    "RolloutChange": {
        "type": "object",
        "required": ["reason"],
        # A change with nothing to change would still write an audit row, so it is refused.
        "anyOf": [
            {"required": [name]} for name in ("percentage", "shadow", "n8n_enabled", "guard")
        ],
        "additionalProperties": False,
        "properties": {
            "percentage": {"type": "integer", "minimum": 0, "maximum": 100},
            "shadow": {"type": "boolean"},
            "n8n_enabled": {"type": "boolean"},
            "guard": _ref("Guard"),
            "reason": _REASON,
            "actor": _ACTOR,
        },
    },
    "Reason": {
        "type": "object",
        "required": ["reason"],
        "properties": {"reason": _REASON, "actor": _ACTOR},
    },
    "OptionalReason": {
        "type": "object",
        "properties": {
            "reason": {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS},
            "actor": _ACTOR,
        },
    },
    "Rollout": {
        "type": "object",
        "required": ["rollout"],
        "properties": {"rollout": {"type": "object"}},
    },
    "Rollback": {
        "type": "object",
        "required": ["rollback", "rollout"],
        "properties": {"rollback": {"type": "object"}, "rollout": {"type": "object"}},
    },
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {}}},
}


def _body(schema: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


ADMIN: list[dict[str, list[str]]] = [{"admin": []}]

PATHS: dict[str, Any] = {
    "/webhooks/chatwoot": {
        "post": {
            "summary": "A Chatwoot webhook: verified, classified, recorded, acknowledged",
            "security": [{"chatwootSignature": []}, {"webhookToken": []}],
            "parameters": [
                {"name": "X-Chatwoot-Timestamp", "in": "header", "schema": {"type": "string"}},
                {"name": "X-Chatwoot-Signature", "in": "header", "schema": {"type": "string"}},
                {"name": "X-Chatwoot-Delivery", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": _body("ChatwootEvent"),
            "responses": {
                "200": _json(_ref("WebhookOutcome"), "Recorded, ignored or a duplicate."),
                "401": _error("Missing or bad signature, timestamp or token."),
                "422": _error("A customer message lacks what it needs (the detail says what)."),
                **_BODY_ERRORS,
                **_STORE_DOWN,
            },
        }
    },
    "/api/conversations": {
        "post": {
            "summary": "The website's lead form: contact, conversation, broker, greeting",
            "security": [{"formToken": []}],
            "requestBody": _body("LeadForm"),
            "responses": {
                "201": _json(_ref("LeadResult"), "The conversation, new or reused."),
                "401": _error("Authorization: Bearer <FORM_TOKEN> missing or wrong."),
                "422": _invalid("Invalid fields, each named."),
                "502": _error("Chatwoot refused the request."),
                "503": _error("Chatwoot is not configured or did not answer."),
                **_BODY_ERRORS,
                **_STORE_DOWN,
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "security": [],
            "responses": {"200": _json(_ref("Status"), "The process answers.")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: store, queue and a live worker",
            "security": [],
            "responses": {
                "200": _json(_ref("Status"), "Ready."),
                "503": _json(_ref("Status"), "Not ready; `checks` names what is down."),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
        }
    },
    "/api/admin/migration-status": {
        "get": {
            "summary": "Rollout, health, recommendations, queue and workers",
            "security": ADMIN,
            "responses": {"200": _json({"type": "object"}, "The status."), **_ADMIN_AUTH},
        }
    },
    "/api/admin/rollout": {
        "put": {
            "summary": "Change the percentage, shadow, n8n or the guard",
            "security": ADMIN,
            "requestBody": _body("RolloutChange"),
            "responses": {
                "200": _json(_ref("Rollout"), "Saved."),
                "422": _json(
                    {"anyOf": [_ref("FieldErrors"), _ref("Error")]},
                    "Bad or unknown fields (`errors` names each), or the change breaks a rule "
                    "(`rollout_refused`, `detail` says which).",
                ),
                **_ADMIN_AUTH,
                **_BODY_ERRORS,
                **_STORE_DOWN,
            },
        }
    },
    "/api/admin/rollback": {
        "post": {
            "summary": "Percentage to 0 at once; unsent replies handed to n8n",
            "security": ADMIN,
            "requestBody": _body("Reason"),
            "responses": {
                "200": _json(_ref("Rollback"), "Rolled back."),
                "409": _error("There is no n8n workflow to roll back to."),
                "422": _invalid("No reason given."),
                **_ADMIN_AUTH,
                **_BODY_ERRORS,
                **_STORE_DOWN,
            },
        }
    },
    "/api/admin/queue/pause": {
        "post": {
            "summary": "Pause the new pipeline",
            "security": ADMIN,
            "requestBody": _body("OptionalReason", required=False),
            "responses": {
                "200": _json(_ref("Rollout"), "Paused."),
                "422": _invalid("The reason or the actor is not a string or is too long."),
                **_ADMIN_AUTH,
                **_BODY_ERRORS,
                **_STORE_DOWN,
            },
        }
    },
    "/api/admin/queue/resume": {
        "post": {
            "summary": "Resume the new pipeline",
            "security": ADMIN,
            "requestBody": _body("OptionalReason", required=False),
            "responses": {
                "200": _json(_ref("Rollout"), "Resumed."),
                "422": _invalid("The reason or the actor is not a string or is too long."),
                **_ADMIN_AUTH,
                **_BODY_ERRORS,
                **_STORE_DOWN,
            },
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "ai-broker receiver",
        "version": "1",
        "description": "Chatwoot webhooks, the lead form, health, metrics and the admin API. "
        "Every error is a JSON object with `error`; none carries a stack trace.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "chatwootSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Chatwoot-Signature",
                "description": "sha256=<hex HMAC-SHA256(CHATWOOT_WEBHOOK_SECRET, "
                '"<X-Chatwoot-Timestamp>.<raw body>")>',
            },
            "webhookToken": {"type": "apiKey", "in": "query", "name": "token"},
            "formToken": {"type": "http", "scheme": "bearer"},
            "admin": {"type": "http", "scheme": "bearer"},
        },
    },
}
