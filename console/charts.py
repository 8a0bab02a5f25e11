"""Plotly figures for the console: pure functions from the analytics records to a figure.

Times arrive as epoch seconds and are drawn in the operator's time zone; colours follow
console.widgets.STATE_COLOURS so a state looks the same on every chart.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.store.analytics import (
    HISTOGRAM_BINS,
    BrokerReplies,
    ComparisonSummary,
    LatencyBucket,
    OutcomeBucket,
    PercentageStep,
    TrafficBucket,
    WorkloadSample,
)
from console.widgets import STATE_COLOURS, local

HEIGHT = 320
NEW_COLOUR = "#1565c0"
N8N_COLOUR = STATE_COLOURS["forwarded"]
GUARD_COLOUR = "#c62828"
BROKER_COLOURS = ("#1565c0", "#ad1457", "#00897b", "#f4511e", "#6d4c41", "#5e35b1")
_OUTCOMES = (
    ("sent", "sent", STATE_COLOURS["sent"]),
    ("handed_off", "handed off", STATE_COLOURS["handed_off"]),
    ("forwarded", "answered by n8n", STATE_COLOURS["forwarded"]),
    ("shadow", "shadow replies", "#80cbc4"),
    ("other", "merged / skipped / cancelled", "#cfd8dc"),
    ("failed", "failed", STATE_COLOURS["failed"]),
)


def _layout(figure: go.Figure, *, y_title: str, height: int = HEIGHT) -> go.Figure:
    figure.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0,
            "x": 0,
            "font": {"size": 11},
        },
        hovermode="x unified",
        yaxis_title=y_title,
    )
    return figure


def _times(starts: Sequence[float], tz: dt.tzinfo) -> list[dt.datetime]:
    return [local(start, tz) for start in starts]


def throughput(buckets: Sequence[OutcomeBucket], tz: dt.tzinfo) -> go.Figure:
    """Finished jobs per bucket by outcome (stacked), with the failure rate on a second axis."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    x = _times([b.start for b in buckets], tz)
    for attribute, label, colour in _OUTCOMES:
        figure.add_trace(
            go.Bar(
                x=x,
                y=[getattr(b, attribute) for b in buckets],
                name=label,
                marker_color=colour,
                hovertemplate="%{y:,}",
            ),
            secondary_y=False,
        )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[b.failure_rate for b in buckets],
            name="failure rate",
            mode="lines",
            line={"color": GUARD_COLOUR, "width": 2, "dash": "dot"},
            hovertemplate="%{y:.1%}",
            connectgaps=False,
        ),
        secondary_y=True,
    )
    figure.update_layout(barmode="stack", bargap=0.1)
    figure.update_yaxes(title_text="jobs finished", secondary_y=False)
    figure.update_yaxes(
        title_text="failure rate",
        tickformat=".0%",
        rangemode="tozero",
        secondary_y=True,
        showgrid=False,
    )
    return _layout(figure, y_title="jobs finished")


def latency(
    buckets: Sequence[LatencyBucket], tz: dt.tzinfo, *, guard_p95_s: float | None
) -> go.Figure:
    """p50 and p95 of customer message → reply, against the guard's p95 limit."""
    figure = go.Figure()
    x = _times([b.start for b in buckets], tz)
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[b.p50_s for b in buckets],
            name="p50",
            mode="lines",
            line={"color": NEW_COLOUR, "width": 2},
            hovertemplate="%{y:.1f} s",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[b.p95_s for b in buckets],
            name="p95",
            mode="lines",
            line={"color": "#8e24aa", "width": 2},
            hovertemplate="%{y:.1f} s",
        )
    )
    if guard_p95_s is not None:
        figure.add_hline(
            y=guard_p95_s,
            line={"color": GUARD_COLOUR, "dash": "dash", "width": 1},
            annotation_text=f"guard p95 limit {guard_p95_s:g} s",
            annotation_position="top left",
        )
    figure.update_yaxes(rangemode="tozero", ticksuffix=" s")
    return _layout(figure, y_title="reply latency")


def traffic_share(
    buckets: Sequence[TrafficBucket],
    steps: Sequence[PercentageStep],
    tz: dt.tzinfo,
    *,
    end: float,
) -> go.Figure:
    """Share of customer messages each system answered, with the configured percentage."""
    figure = go.Figure()
    x = _times([b.start for b in buckets], tz)
    shares = [b.new_share for b in buckets]
    # The new pipeline at the bottom, so its edge lines up with the configured percentage.
    figure.add_trace(
        go.Scatter(
            x=x,
            y=shares,
            name="new pipeline",
            mode="lines",
            stackgroup="share",
            line={"color": NEW_COLOUR, "width": 0.5},
            hovertemplate="%{y:.0%}",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[None if s is None else 1 - s for s in shares],
            name="n8n",
            mode="lines",
            stackgroup="share",
            line={"color": N8N_COLOUR, "width": 0.5},
            hovertemplate="%{y:.0%}",
        )
    )
    if steps:
        figure.add_trace(
            go.Scatter(
                x=_times([s.at for s in steps] + [end], tz),
                y=[s.percentage / 100 for s in steps] + [steps[-1].percentage / 100],
                name="configured %",
                mode="lines",
                line={"color": "#212121", "width": 2, "shape": "hv", "dash": "dash"},
                hovertemplate="%{y:.0%}",
            )
        )
    figure.update_yaxes(tickformat=".0%", range=[0, 1])
    return _layout(figure, y_title="share of customer messages")


WORKLOAD_SCALE = (
    (0.0, "#f1f8e9"),
    (0.5, "#9ccc65"),
    (0.79, "#fdd835"),
    (0.8, "#ffa726"),
    (0.99, "#ef6c00"),
    (1.0, "#c62828"),
)


def workload(
    samples: Sequence[WorkloadSample], names: Mapping[str, str], tz: dt.tzinfo
) -> go.Figure:
    """Each broker's workload against capacity over time, one row per broker: green has room,
    orange is busy (80 %+), red is full."""
    times = sorted({s.sampled_at for s in samples})
    brokers = sorted({s.broker_id for s in samples}, key=lambda b: names.get(b, b), reverse=True)
    at = {(s.broker_id, s.sampled_at): s for s in samples}
    loads: list[list[float | None]] = []
    labels: list[list[str]] = []
    for broker_id in brokers:
        row_loads: list[float | None] = []
        row_labels: list[str] = []
        for moment in times:
            sample = at.get((broker_id, moment))
            if sample is None or not sample.capacity:
                row_loads.append(None)
                row_labels.append("no sample")
            else:
                row_loads.append(min(sample.workload / sample.capacity, 1.0))
                row_labels.append(f"{sample.workload} / {sample.capacity} chats")
        loads.append(row_loads)
        labels.append(row_labels)
    figure = go.Figure(
        go.Heatmap(
            x=_times(times, tz),
            y=[names.get(b, b) for b in brokers],
            z=loads,
            customdata=labels,
            zmin=0,
            zmax=1,
            colorscale=[list(stop) for stop in WORKLOAD_SCALE],
            colorbar={"tickformat": ".0%", "thickness": 10, "len": 0.9},
            hovertemplate="%{y} · %{x|%H:%M}<br>%{customdata} (%{z:.0%})<extra></extra>",
            xgap=0,
            ygap=3,
        )
    )
    figure.update_layout(hovermode="closest")
    return _layout(figure, y_title="", height=70 + 44 * max(1, len(brokers)))


def broker_replies(
    rows: Sequence[BrokerReplies], names: Mapping[str, str], tz: dt.tzinfo
) -> go.Figure:
    """Replies sent per bucket, stacked by broker."""
    figure = go.Figure()
    brokers = sorted({row.broker_id for row in rows})
    for index, broker_id in enumerate(brokers):
        series = [row for row in rows if row.broker_id == broker_id]
        figure.add_trace(
            go.Bar(
                x=_times([row.start for row in series], tz),
                y=[row.replies for row in series],
                name=names.get(broker_id, broker_id),
                marker_color=BROKER_COLOURS[index % len(BROKER_COLOURS)],
                hovertemplate="%{y:,}",
            )
        )
    figure.update_layout(barmode="stack", bargap=0.1)
    return _layout(figure, y_title="replies sent")


def state_counts(states: Mapping[str, int]) -> go.Figure:
    """Ledger jobs by state (horizontal bars, a log scale so a handful of failures shows
    next to tens of thousands sent)."""
    ordered = sorted(states.items(), key=lambda item: item[1])
    figure = go.Figure(
        go.Bar(
            x=[n for _, n in ordered],
            y=[state.replace("_", " ") for state, _ in ordered],
            orientation="h",
            marker_color=[STATE_COLOURS.get(state, "#9e9e9e") for state, _ in ordered],
            text=[f"{n:,}" for _, n in ordered],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:,}<extra></extra>",
        )
    )
    largest = max((n for _, n in ordered), default=1)
    # Log scale; the range leaves room for the labels right of the longest bar.
    figure.update_xaxes(
        type="log",
        range=[-0.2, math.log10(max(largest, 1) * 6)],
        showticklabels=False,
        showgrid=False,
    )
    figure.update_layout(hovermode="closest", showlegend=False)
    return _layout(figure, y_title="", height=max(220, 28 * len(ordered) + 40))


def similarity_histogram(summary: ComparisonSummary) -> go.Figure:
    """How alike the two systems' replies are, from 0 (nothing shared) to 1 (the same)."""
    width = 1 / HISTOGRAM_BINS
    centres = [(i + 0.5) * width for i in range(HISTOGRAM_BINS)]
    colours = [
        STATE_COLOURS["failed"] if c < 0.4 else "#f9a825" if c < 0.7 else STATE_COLOURS["sent"]
        for c in centres
    ]
    figure = go.Figure(
        go.Bar(
            x=centres,
            y=list(summary.histogram),
            width=width * 0.92,
            marker_color=colours,
            hovertemplate="%{x:.2f}: %{y:,} comparisons<extra></extra>",
        )
    )
    figure.update_xaxes(range=[0, 1], dtick=0.1, title_text="similarity")
    figure.update_layout(hovermode="closest", showlegend=False)
    return _layout(figure, y_title="comparisons", height=260)


def verdicts(summary: ComparisonSummary) -> go.Figure:
    """Operators' verdicts on the new pipeline's replies, as one stacked bar."""
    figure = go.Figure()
    for count, label, colour in (
        (summary.better, "new better", STATE_COLOURS["sent"]),
        (summary.same, "same", "#90a4ae"),
        (summary.worse, "new worse", STATE_COLOURS["failed"]),
    ):
        figure.add_trace(
            go.Bar(
                x=[count],
                y=["verdicts"],
                orientation="h",
                name=label,
                marker_color=colour,
                text=[f"{label}: {count:,}"],
                textposition="inside",
                hovertemplate=f"{label}: %{{x:,}}<extra></extra>",
            )
        )
    figure.update_layout(barmode="stack", hovermode="closest", showlegend=False)
    figure.update_xaxes(showticklabels=False, showgrid=False)
    figure.update_yaxes(showticklabels=False)
    return _layout(figure, y_title="", height=110)
