"""GET /openapi.json: the document covers every route, and docs/api.md agrees with it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.bootstrap import build_services, prepare_store
from app.config import Settings
from app.web import create_app
from app.web.openapi import DOCUMENT

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"
METHODS = {"get", "post", "put", "delete", "patch"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    services = build_services(Settings(data_dir=tmp_path, chatwoot_webhook_secret="s"))
    prepare_store(services.store)
    yield create_app(services=services)
    services.store.close()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_document_is_served(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json == DOCUMENT
    assert response.json["openapi"].startswith("3.1")


def test_every_route_is_in_the_document_and_nothing_else(app: Flask) -> None:
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method.lower() in METHODS
    }
    assert routes == documented_operations()


def test_every_reference_resolves() -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    schemas = DOCUMENT["components"]["schemas"]
    for ref in refs(DOCUMENT):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas


def api_md_sections() -> dict[tuple[str, str], str]:
    """docs/api.md's section per operation (`## POST /path`, `### ...`, `... and resume`); each
    admin route's also holds the Admin API section's checks, which come before all of them."""
    text = API_DOC.read_text()
    headings = list(re.finditer(r"^#{2,3} (.*)$", text, re.M))
    bodies = {
        heading.group(1): text[
            heading.end() : headings[i + 1].start() if i + 1 < len(headings) else len(text)
        ]
        for i, heading in enumerate(headings)
    }
    admin_checks = bodies.get("Admin API", "")
    sections: dict[tuple[str, str], str] = {}
    for title, body in bodies.items():
        route = re.fullmatch(r"(GET|POST|PUT|DELETE|PATCH) (\S+)(.*)", title)
        if route is None:
            continue
        method, path, rest = route.groups()
        paths = [path] + [
            path.rsplit("/", 1)[0] + "/" + other for other in re.findall(r"and (\w+)", rest)
        ]
        for each in paths:
            sections[(method, each)] = body + (
                admin_checks if each.startswith("/api/admin/") else ""
            )
    return sections


def status_codes(section: str) -> set[str]:
    """The codes a section lists: in its tables' first column, or leading an example answer."""
    codes: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`(\d{3})`", line.split("|")[1]))
        elif answer := re.match(r"(\d{3}) \S", line):
            codes.add(answer.group(1))
    return codes


def test_docs_api_md_has_a_section_for_every_operation_and_only_those() -> None:
    assert set(api_md_sections()) == documented_operations()


def test_docs_api_md_lists_the_same_status_codes_as_the_document() -> None:
    mismatches = {}
    for (method, path), body in api_md_sections().items():
        in_doc = status_codes(body)
        in_openapi = set(DOCUMENT["paths"][path][method.lower()]["responses"])
        if in_doc != in_openapi:
            mismatches[f"{method} {path}"] = {
                "only in docs/api.md": sorted(in_doc - in_openapi),
                "only in the document": sorted(in_openapi - in_doc),
            }
    assert mismatches == {}
