"""Brokers: workload against capacity now and over time; a broker at capacity stands out."""

from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st
from streamlit.testing.v1 import AppTest

from app.store.analytics import Analytics
from app.store.base import Store
from tests.console.conftest import no_failures
from tests.console.conftest import table as first_table


def test_brokers_page_shows_each_persona_and_flags_the_full_one(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("brokers")
    no_failures(app)
    table = first_table(app, "in progress")
    brokers = {b.name: b for b in store.list_brokers()}
    assert sorted(table["broker"]) == sorted(brokers)
    michelle = table[table["broker"] == "Michelle Chen"].iloc[0]
    assert michelle["status"] == "at capacity"
    assert michelle["in progress"] == "12 / 12"
    assert michelle["conversations (all time)"] == brokers["Michelle Chen"].total_conversations
    assert set(table[table["broker"] != "Michelle Chen"]["status"]) <= {"busy", "has room"}
    assert next(w.value for w in app.warning).startswith("**Michelle Chen is at capacity**")


def test_workload_over_time_comes_from_the_samples_the_worker_writes(
    console: Callable[..., AppTest],
    data_dir: object,
    store: Store,
    sql: Callable[..., None],
    analytics: Analytics,
) -> None:
    sql("DELETE FROM broker_samples")
    app = console("brokers")
    assert any("No workload samples yet" in i.value for i in app.info)
    assert analytics.sample_brokers(time.time()) == 5
    st.cache_data.clear()  # the chart's figures are cached for 10 s
    app.run()
    assert not any("No workload samples yet" in i.value for i in app.info)
