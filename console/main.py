"""The console's entry point (`streamlit run console/main.py`, normally via `ai-broker console`):
the login gate, the page router and the sidebar.

The pages live in console/views/, not pages/: with a pages/ folder next to the entry point,
Streamlit runs a requested page file directly until some session has called st.navigation,
which would skip the login gate right after a start.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.store.base import StoreError
from console import auth, data, widgets

VIEWS = Path(__file__).parent / "views"

st.set_page_config(
    page_title="ai-broker console",
    page_icon=":material/support_agent:",
    layout="wide",
    initial_sidebar_state="expanded",
)

settings = data.settings()
data.start(settings)
operator = auth.require_operator(settings)

navigation = st.navigation(
    [
        st.Page(
            VIEWS / "overview.py",
            title="Overview",
            icon=":material/monitoring:",
            url_path="overview",
            default=True,
        ),
        st.Page(
            VIEWS / "brokers.py",
            title="Brokers",
            icon=":material/support_agent:",
            url_path="brokers",
        ),
        st.Page(
            VIEWS / "compare.py",
            title="Compare",
            icon=":material/compare_arrows:",
            url_path="compare",
        ),
        st.Page(
            VIEWS / "rollout.py", title="Rollout", icon=":material/alt_route:", url_path="rollout"
        ),
        st.Page(VIEWS / "jobs.py", title="Jobs", icon=":material/list_alt:", url_path="jobs"),
    ]
)

try:
    current = data.status()
except StoreError as exc:
    # The store is down or not set up: say so and what to do, never a traceback.
    st.error(
        f"The store did not answer: {exc}. Check that the database is up, then reload "
        "this page; `ai-broker doctor` checks every dependency.",
        icon=":material/database_off:",
    )
    st.stop()

with st.sidebar:
    rollout = current.rollout
    st.markdown("**Rollout**")
    st.markdown(
        f":blue-badge[{rollout.percentage} % new pipeline] "
        f"{':green-badge[shadow on]' if rollout.shadow else ':gray-badge[shadow off]'} "
        f"{':red-badge[queue paused]' if rollout.queue_paused else ':green-badge[queue running]'}"
    )
    alive = len(current.alive_workers)
    st.caption(
        f"{alive} worker{'s' if alive != 1 else ''} alive · "
        f"{widgets.count(current.unsent)} unsent replies"
    )
    st.divider()
    role = "" if operator.can_act else " (read-only)"
    st.caption(f"Signed in as **{operator.name}**{role}")
    st.button("Log out", icon=":material/logout:", on_click=auth.log_out, key="logout")

navigation.run()
# After the page: a page widget's callback runs when the page registers it, so its outcome
# is only known now.
widgets.show_flash()
