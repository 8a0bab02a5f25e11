"""Compare: both replies side by side, filters, aggregate verdicts, CSV export, and verdicts
stored with the operator's identity."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from app.store.analytics import ComparisonFilter
from app.store.base import Store
from app.store.models import Verdict
from console import data
from tests.console.conftest import OPERATOR, no_failures


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def test_comparisons_side_by_side_with_summary(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("compare")
    no_failures(app)
    total = len(store.list_comparisons(limit=10_000))
    assert metric(app, "Comparisons") == f"{total:,}"
    newest = store.list_comparisons(limit=1)[0]
    texts = " ".join(m.value for m in app.markdown)
    assert f"**#{newest.id}**" in texts
    assert "**n8n**" in texts and "**New pipeline**" in texts
    assert len(app.get("html")) >= 1  # the highlighted word diff
    assert app.get("download_button")


def test_a_verdict_is_stored_with_the_operator_and_the_note(
    console: Callable[..., AppTest], store: Store
) -> None:
    app = console("compare")
    target = store.list_comparisons(limit=1)[0]
    app.text_input(key=f"note_{target.id}").input("Answers the LTV question; n8n stalls")
    app.button(key=f"verdict_better_{target.id}").click().run()
    no_failures(app)
    stored = store.get_comparison(target.id)
    assert stored is not None
    assert stored.verdict is Verdict.BETTER
    assert stored.verdict_by == OPERATOR.actor
    assert stored.verdict_note == "Answers the LTV question; n8n stalls"
    print(
        "TOASTS",
        app.toast,
        "console_flash" in app.session_state,
        app.get("toast"),
        [type(e).__name__ for e in app.main],
    )
    assert any("rated" in t.value for t in app.toast)
    assert app.button(key=f"verdict_better_{target.id}").proto.type == "primary"


def test_unrated_and_low_similarity_filters(console: Callable[..., AppTest], store: Store) -> None:
    app = console("compare")
    everything = store.list_comparisons(limit=10_000)
    app.toggle(key="compare_unrated").set_value(True).run()
    assert metric(app, "Comparisons") == f"{sum(c.verdict is None for c in everything):,}"
    assert metric(app, "Rated") == "0"
    app.toggle(key="compare_unrated").set_value(False)
    app.toggle(key="compare_low").set_value(True).run()
    low = sum(c.similarity is not None and c.similarity < 0.5 for c in everything)
    assert metric(app, "Comparisons") == f"{low:,}"


def test_csv_export_has_both_replies_and_defuses_formulas(
    console: Callable[..., AppTest], store: Store, sql: Callable[..., None]
) -> None:
    app = console("compare")
    no_failures(app)
    first = store.list_comparisons(limit=1)[0]
    sql(
        "UPDATE shadow_comparisons SET customer_message = '=HYPERLINK(\"x\")', "
        "verdict_by = '@SUM(1)', verdict_note = '  +cmd|'' /C calc''!A0' WHERE id = ?",
        (first.id,),
    )
    rows = list(
        csv.DictReader(
            io.StringIO(
                data.comparisons_to_csv([c for c in store.list_comparisons(limit=5)]).decode()
            )
        )
    )
    assert rows[0]["customer_message"] == '\'=HYPERLINK("x")'
    assert rows[0]["verdict_by"] == "'@SUM(1)"  # an operator's name is theirs to choose
    assert rows[0]["verdict_note"] == "'  +cmd|' /C calc'!A0"
    assert rows[0]["n8n_reply"] and rows[0]["new_reply"]
    assert set(rows[0]) >= {"similarity", "verdict", "verdict_by", "n8n_latency_ms"}
    assert ComparisonFilter() == ComparisonFilter()  # hashable filter: a cache key


def test_no_comparisons_yet_points_to_rollout(
    console: Callable[..., AppTest], store: Store, sql: Callable[..., None]
) -> None:
    sql("DELETE FROM shadow_comparisons")
    app = console("compare")
    assert not app.exception
    assert app.info[0].value == "No comparisons yet — turn shadow on in Rollout."
    assert not app.metric
