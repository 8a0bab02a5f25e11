"""Presentation shared by the pages: numbers and times for humans, status colours, the word
diff, alerts, flash messages, and the confirmation dialog every risky action goes through.

A dialog stays open across reruns through session state (not through the button that opened
it), so it survives the full reruns of AppTest as well as the browser's fragment reruns.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from app.domain.rollout import RolloutState
from console.data import Alert

DIALOG_KEY = "console_dialog"
FLASH_KEY = "console_flash"
REASON_MAX_CHARS = 500

BadgeColour = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "primary"]

# One colour per job state, the same on every chart and badge.
STATE_COLOURS: dict[str, str] = {
    "sent": "#2e7d32",
    "handed_off": "#7b1fa2",
    "failed": "#c62828",
    "forwarded": "#ef6c00",
    "forwarding": "#ffa726",
    "recorded": "#00838f",
    "queued": "#90a4ae",
    "waiting": "#1e88e5",
    "running": "#f9a825",
    "merged": "#9e9e9e",
    "skipped": "#8d6e63",
    "cancelled": "#5d4037",
}
STATE_BADGES: dict[str, BadgeColour] = {
    "sent": "green",
    "handed_off": "violet",
    "failed": "red",
    "forwarded": "orange",
    "forwarding": "orange",
    "recorded": "blue",
    "queued": "gray",
    "waiting": "blue",
    "running": "yellow",
    "merged": "gray",
    "skipped": "gray",
    "cancelled": "gray",
}
STATE_LABELS: dict[str, str] = {
    "handed_off": "handed off",
    "forwarded": "answered by n8n",
    "recorded": "shadow recorded",
}


# -- numbers and times -------------------------------------------------------------------------
def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f} %"


def seconds(value: float | None) -> str:
    """850 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        minutes, rest = divmod(int(value), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(int(value) // 60, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def size(value: int | None) -> str:
    """850 B, 4.2 kB, 1.3 MB."""
    if value is None:
        return "—"
    if value < 1000:
        return f"{value} B"
    if value < 1_000_000:
        return f"{value / 1000:.1f} kB"
    return f"{value / 1_000_000:.1f} MB"


def ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "—"
    delta = now - timestamp
    if delta < 0:
        return f"in {seconds(-delta)}"
    if delta < 5:
        return "just now"
    if delta < 60:
        return f"{int(delta)} s ago"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return f"{int(delta // 86400)} d ago"


def timezone() -> dt.tzinfo:
    """The browser's time zone (st.context), else UTC."""
    name = st.context.timezone
    if name:
        try:
            return ZoneInfo(name)
        except ZoneInfoNotFoundError:
            pass
    return dt.UTC


def local(timestamp: float, tz: dt.tzinfo) -> dt.datetime:
    """A naive local datetime (plotly draws naive datetimes as they are)."""
    return dt.datetime.fromtimestamp(timestamp, tz).replace(tzinfo=None)


def clock(timestamp: float | None, tz: dt.tzinfo, *, date: bool = True) -> str:
    if timestamp is None:
        return "—"
    moment = dt.datetime.fromtimestamp(timestamp, tz)
    return moment.strftime("%d %b %H:%M:%S" if date else "%H:%M:%S")


def last_change(state: RolloutState, now: float, tz: dt.tzinfo) -> str:
    """Who changed the rollout last and when; a state no one has changed says so, rather than
    'changed 20,790 days ago' from a zero timestamp."""
    if not state.updated_at:
        return (
            "Never changed here: these are the start-up settings (ROLLOUT_PERCENTAGE, "
            "ROLLOUT_SHADOW)."
        )
    return (
        f"Last changed by {state.updated_by} {ago(state.updated_at, now)} "
        f"({clock(state.updated_at, tz)})"
    )


def tz_label(tz: dt.tzinfo) -> str:
    return dt.datetime.now(tz).strftime("%Z") or str(tz)


# -- status ------------------------------------------------------------------------------------
def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state)


def state_badge(state: str) -> str:
    """Markdown for a coloured state badge."""
    return f":{STATE_BADGES.get(state, 'gray')}-badge[{state_label(state)}]"


def load_badge(load: float) -> str:
    if load >= 1:
        return ":red-badge[:material/block: at capacity]"
    if load >= 0.8:
        return ":orange-badge[busy]"
    return ":green-badge[has room]"


LOAD_COLOURS = {"full": "#c62828", "busy": "#ef6c00", "ok": "#2e7d32"}


def load_level(load: float) -> str:
    return "full" if load >= 1 else "busy" if load >= 0.8 else "ok"


def load_bar_html(workload: int, capacity: int) -> str:
    """A workload bar coloured by how full the broker is (st.progress has one colour only)."""
    load = workload / capacity if capacity else 0.0
    colour = LOAD_COLOURS[load_level(load)]
    return (
        '<div style="font-size:0.85rem;margin:0.2rem 0 0.15rem">'
        f"{workload} / {capacity} chats in progress ({load:.0%})</div>"
        '<div style="background:#eceff1;border-radius:4px;height:8px">'
        f'<div style="width:{min(load, 1.0) * 100:.0f}%;background:{colour};height:8px;'
        'border-radius:4px"></div></div>'
    )


def coloured(rows: Sequence[dict[str, Any]], column: str, colours: dict[str, str]) -> Styler:
    """A table whose `column` is drawn in its status colour (text values map to colours)."""
    frame = pd.DataFrame(list(rows))

    def paint(value: object) -> str:
        colour = colours.get(str(value))
        return f"color: {colour}; font-weight: 600" if colour else ""

    return frame.style.map(paint, subset=[column])


def similarity_badge(score: float | None) -> str:
    if score is None:
        return ":gray-badge[not scored yet]"
    colour = "green" if score >= 0.7 else "orange" if score >= 0.4 else "red"
    return f":{colour}-badge[similarity {score:.2f}]"


def show_alerts(found: Sequence[Alert]) -> None:
    if not found:
        st.success("All clear: workers alive, no backlog, no guard trouble.", icon="✅")
        return
    for alert in found:
        text = f"**{alert.title}** — {alert.detail}"
        if alert.level == "critical":
            st.error(text, icon=":material/error:")
        elif alert.level == "warning":
            st.warning(text, icon=":material/warning:")
        else:
            st.info(text, icon=":material/info:")


def empty_state(message: str, *, link: tuple[str, str] | None = None) -> None:
    """A clear 'nothing here yet' with where to go next: link = (page file, label)."""
    st.info(message, icon=":material/inbox:")
    if link is not None:
        st.page_link(link[0], label=link[1], icon=":material/arrow_forward:")


_MARKDOWN_SPECIALS = str.maketrans({c: f"\\{c}" for c in "\\`*_{}[]()#+-.!|<>~$:=^"})


def plain(text: str | None) -> str:
    """Untrusted text (a customer's message, a reply) made safe for st.markdown: no links,
    images, HTML or LaTeX ("S$280k" must not start a formula)."""
    if not text:
        return "—"
    return text.translate(_MARKDOWN_SPECIALS).replace("\n", "  \n")


# -- the word diff -----------------------------------------------------------------------------
def word_diff_html(old: str, new: str) -> str:
    """`old` → `new` word by word: removed words struck through in red, added ones in green.
    Both texts are escaped (customer messages are untrusted)."""
    a, b = old.split(), new.split()
    parts: list[str] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(html.escape(" ".join(a[i1:i2])))
            continue
        if op in ("delete", "replace"):
            parts.append(f'<del class="diff-del">{html.escape(" ".join(a[i1:i2]))}</del>')
        if op in ("insert", "replace"):
            parts.append(f'<ins class="diff-ins">{html.escape(" ".join(b[j1:j2]))}</ins>')
    return (
        "<style>.diff-del{background:#fde7e9;color:#b71c1c;text-decoration:line-through;"
        "padding:0 2px;border-radius:3px}.diff-ins{background:#e6f4ea;color:#1b5e20;"
        "text-decoration:none;padding:0 2px;border-radius:3px}"
        ".diff-box{line-height:1.7;font-size:0.92rem}</style>"
        f'<div class="diff-box">{" ".join(parts)}</div>'
    )


# -- flash messages ----------------------------------------------------------------------------
def flash(message: str, *, ok: bool = True) -> None:
    """A message for the next run (an action's outcome survives its st.rerun)."""
    st.session_state[FLASH_KEY] = (ok, message)


def show_flash() -> None:
    item = st.session_state.pop(FLASH_KEY, None)
    if item is not None:
        ok, message = item
        st.toast(message, icon=":material/check_circle:" if ok else ":material/error:")


# -- confirmation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Confirmation:
    """A risky action waiting for the operator's confirmation and reason."""

    action: str  # which action of the page (the page maps it to a function)
    title: str
    body: str  # markdown: what will happen
    confirm_label: str
    danger: bool = False
    payload: dict[str, Any] = field(default_factory=dict)
    reason_placeholder: str = "Why? (recorded in the audit log)"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def ask(confirmation: Confirmation) -> None:
    """Open the confirmation dialog (use as a widget callback)."""
    st.session_state[DIALOG_KEY] = confirmation


def pending() -> Confirmation | None:
    item = st.session_state.get(DIALOG_KEY)
    return item if isinstance(item, Confirmation) else None


def close(on_close: Callable[[], None] | None = None) -> None:
    st.session_state.pop(DIALOG_KEY, None)
    st.session_state.pop("dialog_reason", None)
    if on_close is not None:
        on_close()


def confirm_pending(
    act: Callable[[Confirmation, str], Outcome],
    *,
    on_close: Callable[[], None] | None = None,
    disabled_reason: str | None = None,
) -> None:
    """Show the pending confirmation, if any. `act` runs on confirm with the reason;
    `on_close` runs however the dialog closes (e.g. to reset a slider that was not applied)."""
    confirmation = pending()
    if confirmation is None:
        return

    def dismissed() -> None:
        close(on_close)

    @st.dialog(
        confirmation.title,
        width="medium",
        on_dismiss=dismissed,
        icon=":material/warning:" if confirmation.danger else ":material/help:",
    )
    def dialog() -> None:
        st.markdown(confirmation.body)
        reason = st.text_area(
            "Reason",
            placeholder=confirmation.reason_placeholder,
            max_chars=REASON_MAX_CHARS,
            key="dialog_reason",
        )
        left, right = st.columns(2)
        confirmed = left.button(
            confirmation.confirm_label,
            type="primary",
            key="dialog_confirm",
            width="stretch",
            disabled=disabled_reason is not None,
            help=disabled_reason,
        )
        if right.button("Cancel", key="dialog_cancel", width="stretch"):
            close(on_close)
            st.rerun()
        if not confirmed:
            return
        if not reason.strip():
            st.warning("Say why: the reason goes into the audit log.")
            return
        outcome = act(confirmation, reason.strip())
        if not outcome.ok:
            st.error(outcome.message)
            return
        flash(outcome.message)
        close(on_close)
        st.rerun()

    dialog()
