"""The PostgREST sandbox honours PostgREST's contract: raw HTTP against it, on a real database.

The sandbox stands in for Supabase's Data API in the contract suite, so what it answers must be
what PostgREST answers: the RPC shapes, the table grammar, the JSON encoding, the gateway's and
PostgREST's error bodies and statuses. A small schema of its own exercises the shapes the
ai-broker schema does not use (composite and SETOF results).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from app.sandbox.postgrest import PostgrestSandbox, status_for_sqlstate
from tests.support.postgres import service_key, temporary_database

KEY = service_key()
TOY_SCHEMA = """
CREATE TABLE items (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name   text NOT NULL UNIQUE,
    price  double precision,
    tags   text[],
    extra  jsonb,
    seen   timestamptz
);
CREATE FUNCTION add_them(a integer, b integer DEFAULT 1) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT a + b $$;
CREATE FUNCTION item_named(item_name text) RETURNS items
    LANGUAGE sql STABLE AS $$ SELECT * FROM items WHERE name = item_name $$;
CREATE FUNCTION cheap_items(below double precision) RETURNS SETOF items
    LANGUAGE sql STABLE AS $$ SELECT * FROM items WHERE price < below ORDER BY id $$;
CREATE FUNCTION names() RETURNS SETOF text
    LANGUAGE sql STABLE AS $$ SELECT name FROM items ORDER BY id $$;
CREATE FUNCTION touch(item_name text) RETURNS void
    LANGUAGE sql VOLATILE AS $$ UPDATE items SET seen = now() WHERE name = item_name $$;
CREATE FUNCTION refuse() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'I refuse!'
        USING DETAIL = 'Pretty simple', HINT = 'There is nothing you can do.';
END $$;
CREATE FUNCTION pay() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE SQLSTATE 'PT402' USING MESSAGE = 'Payment Required', DETAIL = 'Quota exceeded';
END $$;
INSERT INTO items (name, price, tags, extra, seen) VALUES
    ('tea', 1700000000.0, '{hot,"with milk"}', '{"a": 1}', '2024-01-02 03:04:05+00'),
    ('cake', 0.30000000000000004, NULL, NULL, NULL),
    ('a,b', 2.5, '{}', '[]', NULL);
-- More rows than Supabase's max-rows (1,000), and the three ways a function can return them.
CREATE TABLE many (n integer PRIMARY KEY, note text);
INSERT INTO many (n) SELECT generate_series(1, 1500);
CREATE FUNCTION many_rows() RETURNS SETOF many
    LANGUAGE sql STABLE AS $$ SELECT * FROM many ORDER BY n $$;
CREATE FUNCTION many_numbers() RETURNS SETOF integer
    LANGUAGE sql STABLE AS $$ SELECT n FROM many ORDER BY n $$;
CREATE FUNCTION many_as_jsonb() RETURNS jsonb
    LANGUAGE sql STABLE AS $$ SELECT jsonb_agg(n ORDER BY n) FROM many $$;
"""


@pytest.fixture(scope="module")
def api() -> Iterator[PostgrestSandbox]:
    with temporary_database(migrated=False) as dsn:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(TOY_SCHEMA.encode())
        with PostgrestSandbox(dsn, service_key=KEY) as sandbox:
            yield sandbox


@pytest.fixture
def http(api: PostgrestSandbox) -> Iterator[httpx.Client]:
    headers = {"apikey": KEY, "Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=f"{api.url}/rest/v1", headers=headers, timeout=10) as client:
        yield client


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "details", "hint", "message"}
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return body


# -- the gateway ----------------------------------------------------------------------------
def test_requests_need_the_service_key(api: PostgrestSandbox) -> None:
    url = f"{api.url}/rest/v1/items"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json() == {
        "message": "No API key found in request",
        "hint": "No `apikey` request header or url param was found.",
    }
    wrong = httpx.get(url, headers={"apikey": "nope", "Authorization": f"Bearer {KEY}"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "Invalid API key"
    anonymous = httpx.get(url, headers={"apikey": KEY})
    assert anonymous.status_code == 401 and error(anonymous)["code"] == "PGRST302"
    forged = httpx.get(url, headers={"apikey": KEY, "Authorization": f"Bearer {service_key('x')}"})
    assert forged.status_code == 401 and error(forged)["code"] == "PGRST301"


def test_only_the_configured_schema_is_exposed(http: httpx.Client) -> None:
    response = http.get("/items", headers={"Accept-Profile": "private"})
    assert response.status_code == 406
    body = error(response)
    assert body["code"] == "PGRST106"
    assert body["hint"] == "Only the following schemas are exposed: public"


# -- /rpc -----------------------------------------------------------------------------------
def test_scalar_functions_answer_the_bare_value(http: httpx.Client) -> None:
    response = http.post("/rpc/add_them", json={"a": 1, "b": 2})
    assert response.status_code == 200
    assert response.text == "3"
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    # A parameter with a default may be left out; GET passes the arguments in the query.
    assert http.post("/rpc/add_them", json={"a": 41}).json() == 42
    assert http.get("/rpc/add_them", params={"a": "5", "b": "6"}).json() == 11


def test_composite_and_setof_results(http: httpx.Client) -> None:
    tea = http.post("/rpc/item_named", json={"item_name": "tea"}).json()
    assert tea["name"] == "tea" and tea["id"] == 1
    # A composite function that finds nothing answers an object of nulls, as PostgREST does.
    nothing = http.post("/rpc/item_named", json={"item_name": "soup"}).json()
    assert nothing == {key: None for key in tea}
    cheap = http.post("/rpc/cheap_items", json={"below": 3}).json()
    assert [item["name"] for item in cheap] == ["cake", "a,b"]
    assert http.post("/rpc/cheap_items", json={"below": 0}).json() == []
    assert http.post("/rpc/names", json={}).json() == ["tea", "cake", "a,b"]


def test_void_functions_answer_204_without_a_body(http: httpx.Client) -> None:
    response = http.post("/rpc/touch", json={"item_name": "cake"})
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers


def test_get_runs_read_only(http: httpx.Client) -> None:
    # PostgREST calls functions under GET in a read-only transaction.
    response = http.get("/rpc/touch", params={"item_name": "cake"})
    assert response.status_code == 405
    assert error(response)["code"] == "25006"


def test_unknown_functions_and_arguments_are_pgrst202(http: httpx.Client) -> None:
    response = http.post("/rpc/add_them", json={"a": 1, "c": 2})
    assert response.status_code == 404
    body = error(response)
    assert body["code"] == "PGRST202"
    assert (
        body["message"] == "Could not find the function public.add_them(a, c) in the schema cache"
    )
    assert body["details"].startswith(
        "Searched for the function public.add_them with parameters a, c"
    )
    assert http.post("/rpc/nothing_here", json={}).status_code == 404
    assert http.post("/rpc/add_them", json={"b": 1}).status_code == 404  # `a` is required


def test_function_errors_keep_postgres_fields(http: httpx.Client) -> None:
    refused = http.post("/rpc/refuse", json={})
    assert refused.status_code == 400
    assert error(refused) == {
        "code": "P0001",
        "details": "Pretty simple",
        "hint": "There is nothing you can do.",
        "message": "I refuse!",
    }
    paid = http.post("/rpc/pay", json={})
    assert paid.status_code == 402
    assert error(paid)["code"] == "PT402"
    bad_type = http.post("/rpc/add_them", json={"a": "one"})
    assert bad_type.status_code == 400 and error(bad_type)["code"] == "22P02"
    not_json = http.post(
        "/rpc/add_them", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and error(not_json)["code"] == "PGRST102"


# -- tables ---------------------------------------------------------------------------------
def test_postgres_writes_the_json(http: httpx.Client) -> None:
    response = http.get("/items", params={"select": "name,price,tags,extra,seen", "order": "id"})
    assert response.status_code == 200
    assert response.headers["content-range"] == "0-2/*"
    # float8 as the shortest exact number, timestamptz as ISO 8601, arrays and jsonb as JSON.
    assert '"price":1700000000,' in response.text
    assert '"price":0.30000000000000004' in response.text
    assert response.json()[0] == {
        "name": "tea",
        "price": 1700000000,
        "tags": ["hot", "with milk"],
        "extra": {"a": 1},
        "seen": "2024-01-02T03:04:05+00:00",
    }


def test_horizontal_filters(http: httpx.Client) -> None:
    def names(**params: str) -> list[str]:
        response = http.get("/items", params={"select": "name", "order": "id", **params})
        assert response.status_code == 200, response.text
        return [row["name"] for row in response.json()]

    assert names(price="lt.3") == ["cake", "a,b"]
    assert names(price="gte.2.5") == ["tea", "a,b"]
    assert names(name="neq.tea") == ["cake", "a,b"]
    assert names(name='in.(tea,"a,b")') == ["tea", "a,b"]
    assert names(name="not.in.(tea)") == ["cake", "a,b"]
    assert names(tags="is.null") == ["cake"]
    assert names(tags="not.is.null") == ["tea", "a,b"]
    assert names(name="like.*a*") == ["tea", "cake", "a,b"]
    assert names(name="ilike.C*") == ["cake"]
    assert names(order="price.desc.nullslast", limit="1", offset="1") == ["a,b"]


def test_filter_errors(http: httpx.Client) -> None:
    unknown_column = http.get("/items", params={"colour": "eq.red"})
    assert unknown_column.status_code == 400
    assert error(unknown_column)["code"] == "42703"
    bad_operator = http.get("/items", params={"price": "about.3"})
    assert bad_operator.status_code == 400 and error(bad_operator)["code"] == "PGRST100"
    bad_value = http.get("/items", params={"price": "eq.cheap"})
    assert bad_value.status_code == 400 and error(bad_value)["code"] == "22P02"
    missing = http.get("/nothing_here")
    assert missing.status_code == 404
    assert error(missing) == {
        "code": "PGRST205",
        "details": None,
        "hint": None,
        "message": "Could not find the table 'public.nothing_here' in the schema cache",
    }


def test_singular_responses(http: httpx.Client) -> None:
    singular = {"Accept": "application/vnd.pgrst.object+json"}
    one = http.get("/items", params={"name": "eq.tea", "select": "name"}, headers=singular)
    assert one.status_code == 200 and one.json() == {"name": "tea"}
    none = http.get("/items", params={"name": "eq.soup"}, headers=singular)
    assert none.status_code == 406
    assert error(none) == {
        "code": "PGRST116",
        "details": "The result contains 0 rows",
        "hint": None,
        "message": "Cannot coerce the result to a single JSON object",
    }


def test_writes_and_preferences(http: httpx.Client) -> None:
    representation = {"Prefer": "return=representation"}
    created = http.post("/items", json={"name": "scone", "price": 3.25}, headers=representation)
    assert created.status_code == 201
    assert created.json()[0]["name"] == "scone"
    minimal = http.post("/items", json=[{"name": "bun", "price": 1}])
    assert minimal.status_code == 201 and minimal.content == b""
    duplicate = http.post("/items", json={"name": "bun", "price": 9})
    assert duplicate.status_code == 409 and error(duplicate)["code"] == "23505"
    ignored = http.post(
        "/items",
        params={"on_conflict": "name"},
        json=[{"name": "bun", "price": 9}, {"name": "roll", "price": 2}],
        headers={"Prefer": "resolution=ignore-duplicates,return=representation"},
    )
    assert ignored.status_code == 201
    assert [row["name"] for row in ignored.json()] == ["roll"]
    merged = http.post(
        "/items",
        params={"on_conflict": "name", "select": "name,price"},
        json={"name": "bun", "price": 9},
        headers={"Prefer": "resolution=merge-duplicates,return=representation"},
    )
    assert merged.json() == [{"name": "bun", "price": 9}]
    patched = http.patch("/items", params={"name": "eq.bun"}, json={"price": 4})
    assert patched.status_code == 204
    patched = http.patch(
        "/items",
        params={"name": "eq.bun", "select": "price"},
        json={"price": 5},
        headers=representation,
    )
    assert patched.status_code == 200 and patched.json() == [{"price": 5}]
    unknown = http.patch("/items", params={"name": "eq.bun"}, json={"colour": "red"})
    assert unknown.status_code == 400 and error(unknown)["code"] == "PGRST204"
    deleted = http.delete(
        "/items", params={"name": "in.(bun,roll,scone)", "select": "name"}, headers=representation
    )
    assert sorted(row["name"] for row in deleted.json()) == ["bun", "roll", "scone"]
    assert http.delete("/items", params={"name": "eq.bun"}).status_code == 204


# -- max-rows -------------------------------------------------------------------------------
def test_reads_are_cut_at_max_rows(http: httpx.Client) -> None:
    def read(**params: str) -> tuple[list[int], str]:
        response = http.get("/many", params={"select": "n", "order": "n", **params})
        assert response.status_code == 200, response.text
        return [row["n"] for row in response.json()], response.headers["content-range"]

    assert read() == (list(range(1, 1001)), "0-999/*")
    # max-rows is a hard cap: a larger limit is cut to it, a smaller one is kept.
    assert read(limit="5000") == (list(range(1, 1001)), "0-999/*")
    assert read(limit="10") == (list(range(1, 11)), "0-9/*")
    # The cap counts from the offset, and so does Content-Range.
    assert read(limit="5000", offset="100") == (list(range(101, 1101)), "100-1099/*")
    assert read(offset="1400") == (list(range(1401, 1501)), "1400-1499/*")
    assert read(offset="1500") == ([], "*/*")


def test_setof_functions_are_cut_like_reads(http: httpx.Client) -> None:
    rows = http.post("/rpc/many_rows", json={}).json()
    assert [row["n"] for row in rows] == list(range(1, 1001))
    assert http.get("/rpc/many_numbers").json() == list(range(1, 1001))


def test_one_jsonb_value_is_not_cut(http: httpx.Client) -> None:
    response = http.post("/rpc/many_as_jsonb", json={})
    assert response.status_code == 200
    assert response.json() == list(range(1, 1501))


def test_rows_returned_by_writes_are_not_cut(http: httpx.Client) -> None:
    # PostgREST stopped applying max-rows to POST/PATCH/DELETE in v10 (its issue #2155).
    representation = {"Prefer": "return=representation"}
    patched = http.patch(
        "/many", params={"select": "n"}, json={"note": "seen"}, headers=representation
    )
    assert patched.status_code == 200
    assert [row["n"] for row in patched.json()] == list(range(1, 1501))
    assert patched.headers["content-range"] == "0-1499/*"
    upserted = http.post(
        "/many",
        params={"on_conflict": "n", "select": "n"},
        json=[{"n": n, "note": None} for n in range(1, 1501)],
        headers={"Prefer": "resolution=merge-duplicates,return=representation"},
    )
    assert upserted.status_code == 201
    assert len(upserted.json()) == 1500


# -- through supabase-py --------------------------------------------------------------------
def test_supabase_py_reads_the_answers_and_errors(api: PostgrestSandbox) -> None:
    client = create_client(api.url, KEY, ClientOptions(httpx_client=httpx.Client(timeout=10)))
    assert client.rpc("add_them", {"a": 2, "b": 3}).execute().data == 5
    rows = client.table("items").select("name").lt("price", 3).order("id").execute().data
    assert rows == [{"name": "cake"}, {"name": "a,b"}]
    with pytest.raises(APIError) as refused:
        client.rpc("refuse", {}).execute()
    assert (refused.value.code, refused.value.hint) == ("P0001", "There is nothing you can do.")


def test_injected_faults_look_like_postgrest_errors(
    api: PostgrestSandbox, http: httpx.Client
) -> None:
    api.faults.set(fail_next=1, fail_next_status=503)
    try:
        failed = http.post("/rpc/add_them", json={"a": 1})
    finally:
        api.faults.reset()
    assert failed.status_code == 503 and error(failed)["code"] == "PGRST000"
    assert http.post("/rpc/add_them", json={"a": 1}).json() == 2


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("23505", 409),
        ("23503", 409),
        ("23502", 400),
        ("P0001", 400),
        ("P0002", 500),
        ("PT418", 418),
        ("42883", 404),
        ("42501", 403),
        ("40001", 500),
        ("53300", 503),
        ("53400", 500),
        ("08006", 503),
        ("22P02", 400),
    ],
)
def test_sqlstate_to_http_status(sqlstate: str, status: int) -> None:
    assert status_for_sqlstate(sqlstate) == status
