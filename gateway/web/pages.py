"""The pages' HTML: every name and value escaped here; scripts and styles are files.

The pages are drawn whole on the server (usable before any script runs) and kept current by
``static/gateway.js`` (Server-Sent Events) and ``static/meter.js`` (the chart), which write
only through ``textContent`` and DOM nodes, never HTML strings.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote


def _e(value: Any) -> str:
    if isinstance(value, bool):
        value = "yes" if value else "no"
    return escape("-" if value is None else str(value), quote=True)


def kw(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _page(title: str, body: str, script: str, meter: str | None = None) -> str:
    data = f' data-meter="{_e(meter)}"' if meter is not None else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        '<link rel="stylesheet" href="/static/style.css">'
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">'
        f'<script src="/static/common.js" defer></script>'
        f'<script src="/static/{script}" defer></script>'
        f"</head><body{data}>{body}</body></html>\n"
    )


def _cell(key: str, value: str, unit: str = "") -> str:
    return f'<span data-k="{key}">{value}</span>{unit}'


def peak_since(status: dict[str, Any]) -> str | None:
    """The peak counts since it was last reset (a billing read or a command), else since
    counting began (None)."""
    if status.get("peak_demand_since"):  # status says it itself
        return str(status["peak_demand_since"])
    times = [a["time"] for a in status.get("open_anomalies", []) if a["kind"] == "peak_reset"]
    read = status.get("last_read")
    if read:
        times.append(read["end"])
    return max(times) if times else None


def last_edge(status: dict[str, Any]) -> str | None:
    times = [t for t in status.get("last_edge", {}).values() if t]
    return max(times) if times else None


def meter_card(name: str, status: dict[str, Any], live: dict[str, Any]) -> str:
    anomalies = status.get("open_anomalies", [])
    items = "".join(
        f"<li>{_e(a['time'])} {_e(a['kind'])}: {_e(a['detail'])}</li>" for a in anomalies[-3:]
    )
    edges = " ".join(f"{_e(ch)}={_e(n)}" for ch, n in status.get("edges", {}).items())
    return (
        f'<section class="card" data-meter="{_e(name)}">'
        f'<h2><a href="/meter/{_e(quote(name, safe=""))}">{_e(name)}</a>'
        f" <small>{_e(status.get('model'))}, {_e(status.get('source'))}</small></h2>"
        "<dl>"
        f"<dt>register</dt><dd>{_cell('energy_wh', _e(status['energy_wh']), ' Wh')}</dd>"
        f"<dt>LCD</dt><dd>{_cell('lcd_kwh', _e(status['lcd_kwh']), ' kWh')}</dd>"
        f"<dt>power</dt><dd>{_cell('power_kw', kw(status['power_kw'], 3), ' kW')}</dd>"
        f"<dt>demand</dt><dd>{_cell('demand_kw', kw(status['demand_kw']), ' kW')}</dd>"
        f"<dt>peak</dt><dd>{_cell('peak_demand_kw', kw(status['peak_demand_kw']), ' kW')}"
        f" <small>window ending {_cell('peak_demand_end', _e(status['peak_demand_end']))},"
        f" since {_cell('peak_since', _e(peak_since(status) or 'counting began'))}</small></dd>"
        f"<dt>edges</dt><dd>{_cell('edges', edges)}</dd>"
        f"<dt>last edge</dt><dd>{_cell('last_edge', _e(last_edge(status)))}</dd>"
        f"<dt>quality</dt><dd>{_cell('quality', _e(live.get('quality')))}</dd>"
        f"<dt>anomalies</dt><dd>{_cell('anomalies', _e(len(anomalies)))}</dd>"
        f'</dl><ul class="anomalies" data-k="anomaly_list">{items}</ul></section>'
    )


def health_list(health: dict[str, Any]) -> str:
    rows = [
        ("state", "state"),
        ("mqtt", "MQTT"),
        ("outbox_depth", "outbox"),
        ("storage", "storage"),
        ("last_commit", "last commit"),
        ("clock_synchronized", "clock synchronised"),
    ]
    return (
        '<dl class="health">'
        + "".join(
            f'<dt>{label}</dt><dd><span data-h="{key}">{_e(health.get(key))}</span></dd>'
            for key, label in rows
        )
        + "</dl>"
    )


def gateway_page(title: str, overview: dict[str, Any]) -> str:
    """The gateway page: health, then a card per meter."""
    health = overview["gateway"]
    live = overview.get("live", {})
    cards = "".join(
        meter_card(name, status, live.get(name, {})) for name, status in overview["meters"].items()
    )
    body = (
        f"<header><h1>{_e(health.get('gateway', title))}</h1>"
        f'<p class="live" id="live">connecting…</p></header>'
        f'{health_list(health)}<main id="meters">{cards or "<p>no meter yet</p>"}</main>'
        '<footer><a href="/metrics">metrics</a> · <a href="/api/overview">JSON</a></footer>'
    )
    return _page(f"{title}: amr-gateway", body, "gateway.js")


def meter_page(title: str, data: dict[str, Any]) -> str:
    """A meter's page: its card, today's intervals as a chart, days, reads, downloads."""
    name = data["meter"]
    status = data["status"]
    q = _e(quote(name, safe=""))
    days = "".join(
        f"<tr><td>{_e(d['day'])}</td><td>{_e(d['energy_wh'])}</td><td>{_e(d['intervals'])}</td>"
        f"<td>{_e(d.get('quality'))}</td></tr>"
        for d in data["days"]
    )
    reads = "".join(
        f"<tr><td>{_e(r['period'])}</td><td>{_e(r['end'])}</td><td>{_e(r['energy_wh'])}</td>"
        f"<td>{kw(r['peak_demand_kw'])}</td><td>{_e(r['quality'])}</td>"
        f'<td><a href="/api/meters/{q}/bill.csv?period={_e(r["period"])}">CSV</a></td></tr>'
        for r in data["reads"]
    )
    running = data["current_period"]
    periods = "".join(f"<option>{_e(r['period'])}</option>" for r in reversed(data["reads"]))
    body = (
        f'<header><p><a href="/">← {_e(title)}</a></p><h1>{_e(name)}</h1></header>'
        f"<main>{meter_card(name, status, {})}"
        f"<section><h2>Today ({_e(data['today'])}, UTC): demand per interval</h2>"
        '<figure id="chart" class="chart"></figure>'
        f'<p><small><span id="chart-note">{len(data["intervals"])} intervals</span></small></p>'
        "</section>"
        '<section><h2>Last days</h2><div class="scroll"><table id="days"><thead>'
        "<tr><th>day (UTC)</th><th>Wh</th>"
        f"<th>intervals</th><th>quality</th></tr></thead><tbody>{days}</tbody></table></div></section>"
        "<section><h2>Billing reads</h2>"
        f'<p>current period: <span id="running">{_e(running["energy_wh"])}</span> Wh since '
        f"{_e(running['since'] or 'counting began')}</p>"
        '<div class="scroll"><table id="reads"><thead><tr><th>period</th><th>read at</th>'
        "<th>Wh</th><th>peak kW</th>"
        f"<th>quality</th><th></th></tr></thead><tbody>{reads}</tbody></table></div></section>"
        "<section><h2>Download</h2>"
        f'<form method="get" action="/api/meters/{q}/bill.csv"><label>bill of '
        f'<select name="period">{periods}</select></label> <button>bill CSV</button></form>'
        f'<form method="get" action="/api/meters/{q}/intervals.csv">'
        '<label>from <input name="from" type="date"></label> '
        '<label>to <input name="to" type="date"></label> <button>intervals CSV</button></form>'
        f'<form method="get" action="/api/meters/{q}/espi.xml">'
        '<label>from <input name="from" type="date"></label> '
        '<label>to <input name="to" type="date"></label> <button>Green Button</button></form>'
        "</section></main>"
    )
    return _page(f"{name}: {title}", body, "meter.js", meter=name)


# -- the collector's fleet page (gateway/web/fleet.py gives its overview) ---------------------


def fleet_meter_href(key: str) -> str:
    """A fleet meter's page: ``/meter/GATEWAY/METER``, each part quoted."""
    gateway, _, meter = key.partition("/")
    return f"/meter/{quote(gateway, safe='')}/{quote(meter, safe='')}"


def _fleet_gateway_row(name: str, g: dict[str, Any]) -> str:
    bill = g["bill"]
    state = g["status"] or "unknown"
    return (
        f'<tr data-gateway="{_e(name)}" class="gw-{_e(state)}">'
        f"<td>{_e(name)}</td>"
        f'<td><span data-g="status">{_e(state)}</span></td>'
        f'<td><span data-g="since">{_e(g["since"])}</span></td>'
        f'<td><span data-g="meters">{_e(g["meters"])}</span></td>'
        f'<td><span data-g="attention">{_e(g["attention"])}</span></td>'
        f'<td><span data-g="period">{_e(bill["period"])}</span></td>'
        f'<td><span data-g="bill_energy_wh">{_e(bill["energy_wh"])}</span></td>'
        "</tr>"
    )


def _fleet_meter_row(key: str, m: dict[str, Any]) -> str:
    running = m["current_period"]
    attention = " attention" if m["attention"] else ""
    return (
        f'<tr data-meter="{_e(key)}" class="meter{attention}">'
        f"<td>{_e(m['gateway'])}</td>"
        f'<td><a href="{_e(fleet_meter_href(key))}">{_e(m["meter"])}</a></td>'
        f"<td>{_cell('model', _e(m['model']))}</td>"
        f"<td>{_cell('energy_wh', _e(m['energy_wh']))}</td>"
        f"<td>{_cell('power_kw', kw(m['power_kw'], 3))}</td>"
        f"<td>{_cell('last_interval_end', _e(m['last_interval_end']))}</td>"
        f"<td>{_cell('silent_since', _e(m['silent_since']))}</td>"
        f"<td>{_cell('open_gaps', _e(len(m['open_gaps'])))}</td>"
        f"<td>{_cell('anomalies', _e(m['anomalies']))}</td>"
        f"<td>{_cell('period_energy_wh', _e(running['energy_wh']))}</td>"
        f"<td>{_cell('period_since', _e(running['since'] or 'counting began'))}</td>"
        f"<td>{_cell('peak_demand_kw', kw(m['peak_demand_kw']))}</td>"
        "</tr>"
    )


def fleet_page(title: str, overview: dict[str, Any]) -> str:
    """The fleet page: the collector's health, every gateway, then every meter, those that
    need a look (silent, gaps, anomalies) first, with the current period's bill preview."""
    health = overview["gateway"]
    gateways = "".join(_fleet_gateway_row(n, g) for n, g in overview["gateways"].items())
    meters = "".join(_fleet_meter_row(k, overview["meters"][k]) for k in overview["order"])
    rows = [
        ("state", "state"),
        ("mqtt", "MQTT"),
        ("storage", "storage"),
        ("last_commit", "last commit"),
        ("messages_stored", "messages stored"),
    ]
    health_items = "".join(
        f'<dt>{label}</dt><dd><span data-h="{key}">{_e(health.get(key))}</span></dd>'
        for key, label in rows
    )
    body = (
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="live" id="live">connecting…</p></header>'
        f'<dl class="health">{health_items}</dl>'
        '<main class="fleet">'
        '<section><h2>Gateways</h2><div class="scroll"><table id="gateways"><thead><tr>'
        "<th>gateway</th><th>status</th><th>since</th><th>meters</th><th>need a look</th>"
        "<th>current period</th><th>Wh so far</th></tr></thead>"
        f"<tbody>{gateways}</tbody></table></div>"
        f"{'' if gateways else '<p>no gateway yet</p>'}</section>"
        '<section><h2>Meters <small>those that need a look first</small></h2><div class="scroll">'
        '<table id="fleet-meters"><thead><tr><th>gateway</th><th>meter</th><th>model</th>'
        "<th>register Wh</th><th>kW</th><th>last interval to</th><th>silent since</th>"
        "<th>gaps</th><th>anomalies</th><th>Wh this period</th><th>since</th>"
        f"<th>peak kW</th></tr></thead><tbody>{meters}</tbody></table></div></section>"
        "</main>"
        '<footer><a href="/metrics">metrics</a> · <a href="/api/status">status JSON</a> · '
        '<a href="/api/bill">bill JSON</a></footer>'
    )
    return _page(f"{title}: amr-gateway", body, "fleet.js")
