"""The load-profile plot of ``replay --plot`` (matplotlib, an optional extra)."""

from __future__ import annotations

from typing import Any

from gateway.batch.replay import BatchResult
from gateway.errors import ConfigError
from gateway.timefmt import NS_PER_S, NS_PER_US


def require_matplotlib() -> None:
    """Fail early, before any work, when the plot extra is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'amr-gateway[plot]'") from None


def plot_load_profile(path: str, result: BatchResult) -> None:
    """Draw each meter's interval demand and shade its peak demand window."""
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def when(t_ns: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(t_ns / NS_PER_S, tz=dt.UTC)

    figure, axes = plt.subplots(figsize=(11, 4.5), dpi=100)
    ax: Any = axes
    for name, intervals in sorted(result.intervals.items()):
        if not intervals:
            continue
        starts = intervals.start_ns.tolist()
        times = [when(t) for t in starts] + [when(starts[-1] + intervals.length_ns)]
        hours = intervals.length_ns / NS_PER_S / 3600
        demand = (intervals.energy_wh / 1000 / hours).tolist()
        ax.stairs(demand, times, label=f"{name} interval demand", linewidth=1.0)
        demand_meter = result.cores[name].demand
        peak = demand_meter.peak if demand_meter else None
        if peak is not None:
            end_ns = peak.window_end_us * NS_PER_US
            start_ns = end_ns - demand_meter.settings.window_s * NS_PER_S  # type: ignore[union-attr]
            ax.axvspan(when(start_ns), when(end_ns), alpha=0.25, color="tab:red")
            ax.annotate(
                f"peak {float(peak.demand_kw):.2f} kW",
                (when(end_ns), float(peak.demand_kw)),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("demand (kW)")
    ax.set_title("Load profile: interval demand; shaded: peak demand window")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
