"""``make bench``: the whole system measured against the floor of this machine, in one run.

Three phases, one after the other, each starting what it measures from scratch
(embedded nats-server and PostgreSQL, gateway-sim, the services) and stopping it:

1. **floor** (``bench/floor.py``): JetStream publish → consume → 3-row transaction → ack,
   per message (at ``--rate``, and as a drain) and batched (fetch(100), one transaction
   per batch); NATS request/reply; ib_async placing directly against gateway-sim (its own
   process): LMT placeOrder → Submitted, MKT placeOrder → Filled.
2. **system** (``bench/system.py``): gateway-bridge, order-manager, position-monitor and
   api as processes, gateway-sim in this process (so the moment of a fill and of a
   placeOrder's arrival are read at the simulator): API → broker
   (``POST /api/v1/ib/orders/place`` → the order Submitted); execution at the simulator
   → committed at 50/s and at 200/s;
   pacing (a morning burst of 500 orders on the portfolio's one connection); the burst
   of 10,000 executions (500 orders x 20 partial fills), fully booked and checked exact
   against the simulator's own account.
3. **tick → exit** (``bench/tick_exit.py``): gateway-bridge, order-manager and
   position-monitor as processes, gateway-sim in this process; 50 open positions ticking,
   a price through a stop at the simulator → the exit order received by the simulator.

Every figure is printed with its ratio to its floor from phase 1 of the same run and its
target from issue 10 (met / missed). Writes ``bench/results/<timestamp>.json``,
``bench/results/<timestamp>.md`` (the table, also printed) and PNG plots of the latency
distributions (``bench/results/<timestamp>-*.png``). Exits 1 if an exactness check
failed or a phase could not run. Ctrl-C stops every process it started.

    uv run python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import floor as floor_bench
import latency
import profiling
import system as system_bench
import tick_exit as tick_bench

RESULTS = Path(__file__).parent / "results"

DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {
        "floor": {
            "messages": 1000,
            "rate": 200.0,
            "batched": 5000,
            "requests": 1000,
            "orders": 100,
            "direct_rate": 20.0,
        },
        "system": {
            "rate": 200.0,
            "latency_executions": 1000,
            "orders": 500,
            "lots": 20,
            "light_executions": 250,
            "light_rate": 50.0,
            "api_orders": 100,
            "api_rate": 10.0,
        },
        "tick_exit": {"samples": 100, "positions": 50, "tick_interval": 0.25, "warmup": 3.0},
    },
    "quick": {
        "floor": {
            "messages": 300,
            "rate": 200.0,
            "batched": 2000,
            "requests": 300,
            "orders": 40,
            "direct_rate": 20.0,
        },
        "system": {
            "rate": 200.0,
            "latency_executions": 300,
            "orders": 100,
            "lots": 10,
            "light_executions": 100,
            "light_rate": 50.0,
            "api_orders": 40,
            "api_rate": 10.0,
        },
        "tick_exit": {"samples": 30, "positions": 50, "tick_interval": 0.25, "warmup": 2.0},
    },
}


# --------------------------------------------------------------------------- phases


async def run_phases(
    params: dict[str, dict[str, Any]], only: set[str], profile_dir: Path | None
) -> dict[str, Any]:
    """Each phase in turn; a phase that fails is recorded and the next one still runs.
    With ``profile_dir``, every phase's processes are recorded by py-spy."""
    phases: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
        "floor": floor_bench.run,
        "system": system_bench.run,
        "tick_exit": tick_bench.run,
    }
    results: dict[str, Any] = {"errors": {}, "seconds": {}, "profiles": {}}
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for name, phase in phases.items():
        if only and name not in only:
            continue
        # the reused scripts install their own handlers; ours cancel the whole run
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main_task.cancel)
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        profiler = None
        phase_args = argparse.Namespace(**params[name])
        if profile_dir is not None and name == "system":
            phase_args.profile_dir = profile_dir  # profiled sub-phase by sub-phase
        elif profile_dir is not None:
            profiler = profiling.PhaseProfiler(profile_dir, name)
            await profiler.start()
        try:
            results[name] = await phase(phase_args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            traceback.print_exc()
            results["errors"][name] = repr(exc)
        finally:
            if profiler is not None:
                files = await profiler.stop()
                results["profiles"][name] = {
                    process: {"file": path} | profiling.summarise(path, profiler.seconds)
                    for process, path in files.items()
                }
        results["seconds"][name] = round(time.perf_counter() - started, 1)
    return results


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One row of the table."""

    key: str
    what: str
    value: float | None
    unit: str
    floor: float | None = None
    floor_what: str = ""
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        return round(self.value / self.floor, 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "what": self.what,
            "value": self.value,
            "unit": self.unit,
            "floor": self.floor,
            "floor_what": self.floor_what,
            "ratio_to_floor": self.ratio,
            "target": self.target,
            "met": self.met,
        }


def _get(tree: Any, *path: Any) -> Any:
    for step in path:
        if tree is None:
            return None
        try:
            tree = tree[step]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def figures(r: dict[str, Any]) -> list[Figure]:
    """Every figure of issue 10 item 1, with its floor from the same run and its target."""
    fl = r.get("floor") or {}
    per_msg_p50 = _get(fl, "per_message", "p50_ms")
    per_msg_p99 = _get(fl, "per_message", "p99_ms")
    batched = _get(fl, "batched", "rate_msg_s")
    lmt_p50 = _get(fl, "direct_lmt", "p50_ms")
    lmt_p99 = _get(fl, "direct_lmt", "p99_ms")
    floor_rate = _get(fl, "per_message", "rate_msg_s")
    rows = [
        Figure(
            "floor_per_message_p50",
            f"floor: JetStream → 3-row txn → ack, per message @{floor_rate or '?'}/s, p50",
            per_msg_p50,
            "ms",
        ),
        Figure("floor_per_message_p99", "floor: the same, p99", per_msg_p99, "ms"),
        Figure(
            "floor_per_message_drain",
            "floor: the same as a drain (1 txn per message)",
            _get(fl, "per_message_drain", "rate_msg_s"),
            "msg/s",
        ),
        Figure(
            "floor_batched",
            "floor: batched, fetch(100) → 1 txn per batch → ack all",
            batched,
            "msg/s",
        ),
        Figure(
            "floor_request_reply_p50",
            "floor: NATS request/reply round trip, p50",
            _get(fl, "request_reply", "p50_ms"),
            "ms",
        ),
        Figure(
            "floor_request_reply_p99",
            "floor: NATS request/reply round trip, p99",
            _get(fl, "request_reply", "p99_ms"),
            "ms",
        ),
        Figure(
            "floor_direct_lmt_p50", "floor: ib_async LMT placeOrder → Submitted, p50", lmt_p50, "ms"
        ),
        Figure(
            "floor_direct_lmt_p99", "floor: ib_async LMT placeOrder → Submitted, p99", lmt_p99, "ms"
        ),
        Figure(
            "floor_direct_mkt_p50",
            "floor: ib_async MKT placeOrder → Filled, p50",
            _get(fl, "direct_mkt", "p50_ms"),
            "ms",
        ),
        Figure(
            "floor_direct_mkt_p99",
            "floor: ib_async MKT placeOrder → Filled, p99",
            _get(fl, "direct_mkt", "p99_ms"),
            "ms",
        ),
    ]
    sy = r.get("system") or {}
    committed = _get(sy, "latency", "committed") or {}
    rate = _get(sy, "latency", "offered_rate")
    label = f"execution → committed @{rate:g}/s" if rate else "execution → committed"
    floor_label = "floor per message"
    rows += [
        Figure(
            "execution_committed_p50",
            f"{label}, p50",
            committed.get("p50_ms"),
            "ms",
            per_msg_p50,
            floor_label + " p50",
            "≤ 4 ms",
            _at_most(committed.get("p50_ms"), 4),
        ),
        Figure(
            "execution_committed_p99",
            f"{label}, p99",
            committed.get("p99_ms"),
            "ms",
            per_msg_p99,
            floor_label + " p99",
            "≤ 12 ms",
            _at_most(committed.get("p99_ms"), 12),
        ),
        Figure(
            "execution_committed_max",
            f"{label}, max",
            committed.get("max_ms"),
            "ms",
            _get(fl, "per_message", "max_ms"),
            floor_label + " max",
        ),
    ]
    light = _get(sy, "latency_light", "committed") or {}
    if light:
        light_rate = _get(sy, "latency_light", "offered_rate")
        rows += [
            Figure(
                "execution_committed_light_p50",
                f"(context) execution → committed @{light_rate:g}/s, p50",
                light.get("p50_ms"),
                "ms",
                per_msg_p50,
                floor_label + " p50",
            ),
            Figure(
                "execution_committed_light_p99",
                f"(context) execution → committed @{light_rate:g}/s, p99",
                light.get("p99_ms"),
                "ms",
                per_msg_p99,
                floor_label + " p99",
            ),
        ]
    burst = sy.get("burst") or {}
    burst_rate = burst.get("executions_per_s")
    executions = burst.get("executions")
    met_burst = None
    if burst_rate is not None and batched:
        met_burst = burst_rate >= 2000 and burst_rate >= 0.5 * batched and bool(sy.get("exact"))
    rows += [
        Figure(
            "burst_executions_per_s",
            f"burst: {executions or '?'} executions ({burst.get('orders', '?')} orders,"
            " partial fills), first fill → last committed",
            burst_rate,
            "exec/s",
            batched,
            "floor batched",
            "≥ 2,000/s, ≥ 50 % of batched floor, exact",
            met_burst,
            True,
        ),
        Figure(
            "burst_time_to_drain",
            "burst: first fill → every execution, commission and order booked",
            burst.get("time_to_drain_s"),
            "s",
            round(executions / batched, 3) if executions and batched else None,
            "executions / floor batched",
            f"≤ {executions / 2000:g} s (2,000/s)" if executions else "",
            _at_most(burst.get("time_to_drain_s"), executions / 2000) if executions else None,
        ),
        Figure(
            "burst_exact",
            "books = simulator (executions, transactions, orders, cash, positions)",
            1.0 if sy.get("exact") else (0.0 if "exact" in sy else None),
            "exact",
            target="exact",
            met=sy.get("exact"),
        ),
    ]
    te = _get(r, "tick_exit", "summary") or {}
    rows += [
        Figure(
            "tick_exit_p50",
            f"tick → exit at the simulator, {_get(r, 'tick_exit', 'open_positions') or 50}"
            " positions open, p50",
            te.get("p50_ms"),
            "ms",
            lmt_p50,
            "ib_async placeOrder → Submitted p50",
            "≤ 6 ms",
            _at_most(te.get("p50_ms"), 6),
        ),
        Figure(
            "tick_exit_p99",
            "tick → exit at the simulator, p99",
            te.get("p99_ms"),
            "ms",
            lmt_p99,
            "ib_async placeOrder → Submitted p99",
            "≤ 20 ms",
            _at_most(te.get("p99_ms"), 20),
        ),
    ]
    place = _get(r, "system", "api", "submitted") or {}
    rows += [
        Figure(
            "api_broker_p50",
            "API → broker: POST /orders/place → Submitted (stored in JetStream), p50",
            place.get("p50_ms"),
            "ms",
            lmt_p50,
            "ib_async placeOrder → Submitted p50",
            "≤ 8 ms",
            _at_most(place.get("p50_ms"), 8),
        ),
        Figure(
            "api_broker_p99",
            "API → broker, p99",
            place.get("p99_ms"),
            "ms",
            lmt_p99,
            "ib_async placeOrder → Submitted p99",
            "≤ 25 ms",
            _at_most(place.get("p99_ms"), 25),
        ),
    ]
    pacing = sy.get("pacing") or {}
    orders = pacing.get("orders")
    rows += [
        Figure(
            "pacing_orders_per_s",
            f"pacing: {orders or '?'}-order burst on one connection, placeOrder/s at the simulator",
            pacing.get("orders_per_s"),
            "orders/s",
            50.0,
            "IB's limit, 50 msg/s",
            "40/s",
            None if pacing.get("orders_per_s") is None else pacing["orders_per_s"] >= 40,
            True,
        ),
        Figure(
            "pacing_error_100",
            "pacing: error 100 from the simulator",
            pacing.get("error_100"),
            "",
            target="0",
            met=None if pacing.get("error_100") is None else pacing["error_100"] == 0,
        ),
        Figure(
            "pacing_all_acknowledged",
            "pacing: first submit → every order Submitted",
            pacing.get("first_submit_to_all_acknowledged_s"),
            "s",
            round(orders / 50, 2) if orders else None,
            "orders / 50 msg/s",
            f"≤ {orders / 40:g} s (40/s)" if orders else "",
            _at_most(pacing.get("first_submit_to_all_acknowledged_s"), orders / 40)
            if orders
            else None,
        ),
    ]
    return rows


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if isinstance(value, float) else f"{value:,}"


def markdown(rows: list[Figure], results: dict[str, Any], meta: dict[str, Any]) -> str:
    met = {True: "**met**", False: "**missed**", None: ""}
    lines = [
        f"# make bench — {meta['when']}",
        "",
        f"{meta['mode']} run, {meta['cpus']} CPUs, load average {meta['load_before']} before,"
        f" {meta['load_after']} after; Python {meta['python']}; {meta['seconds']} s in all.",
        "",
        "| figure | value | floor (same run) | x floor | target | |",
        "|---|---:|---|---:|---|---|",
    ]
    for f in rows:
        unit = f" {f.unit}" if f.unit and f.unit != "exact" else ""
        value = ("yes" if f.value else "NO") if f.unit == "exact" and f.value is not None else None
        shown = value or f"{_fmt(f.value)}{unit if f.value is not None else ''}"
        floor = f"{_fmt(f.floor)} {f.unit} ({f.floor_what})" if f.floor is not None else ""
        ratio = f"{f.ratio}x" if f.ratio is not None else ""
        lines.append(f"| {f.what} | {shown} | {floor} | {ratio} | {f.target} | {met[f.met]} |")
    sy = results.get("system") or {}
    for key in ("latency_light", "latency"):
        lat = sy.get(key) or {}
        if not lat:
            continue
        lines += [
            "",
            "Execution → committed, split at the JetStream timestamp of the bridge's"
            " ExecutionReported: simulator → stored (bridge) p50"
            f" {_get(lat, 'sim_to_jetstream', 'p50_ms')} ms / p99"
            f" {_get(lat, 'sim_to_jetstream', 'p99_ms')} ms; stored → committed"
            f" (order-manager) p50 {_get(lat, 'jetstream_to_committed', 'p50_ms')} ms / p99"
            f" {_get(lat, 'jetstream_to_committed', 'p99_ms')} ms; offered"
            f" {lat.get('offered_rate')}/s, achieved {lat.get('achieved_rate')}/s;"
            f" CPU and run-queue wait (ms) over the pass: {lat.get('scheduling')}.",
        ]
    if sy.get("burst"):
        lines += [
            "",
            f"Burst CPU, % of one core: {sy['burst'].get('cpu_percent_of_one_core')}"
            " (the simulator runs inside the bench process); on a CPU / waiting for one, ms:"
            f" {sy['burst'].get('scheduling')}. IB messages the simulator wrote to the bridge"
            f" per execution: {sy['burst'].get('ib_messages_per_execution')}."
            " The bridge reconnected"
            f" {sy['burst'].get('bridge_reconnects')} time(s) during the burst.",
        ]
    if sy.get("check_details"):
        lines += ["", f"Exact checks: {sy.get('checks')}", "", f"Books: {sy['check_details']}"]
    api = sy.get("api") or {}
    if api:
        split = ", ".join(
            f"{_get(api, k, 'scenario').strip()} p50 {_get(api, k, 'p50_ms')} /"
            f" p99 {_get(api, k, 'p99_ms')} ms"
            for k in (
                "at_simulator",
                "post_to_order_recorded",
                "recorded_to_simulator",
                "simulator_to_submitted",
                "http_200",
            )
            if api.get(k)
        )
        lines += ["", f"API → broker ({api.get('orders')} orders at {api.get('rate')}/s): {split}."]
    te = results.get("tick_exit") or {}
    if te:
        split = ", ".join(
            f"{_get(te, k, 'scenario').strip()} p50 {_get(te, k, 'p50_ms')} /"
            f" p99 {_get(te, k, 'p99_ms')} ms"
            for k in ("tick_to_exit_recorded", "exit_recorded_to_simulator")
            if te.get(k)
        )
        lines += [
            "",
            f"Tick → exit: {te.get('ticks_per_second_evaluated')} ticks/s evaluated by the"
            f" position-monitor; its own tick → accepted mean"
            f" {te.get('monitor_tick_to_exit_accepted_mean_ms')} ms; {split};"
            f" failures {te.get('failures')}.",
        ]
    profiles = dict(results.get("profiles") or {})
    for sub, processes in (_get(results, "system", "profiles") or {}).items():
        profiles[f"system/{sub}"] = processes
    for phase, processes in profiles.items():
        lines += ["", f"py-spy, phase {phase} (share of each process's samples on CPU):"]
        for process, prof in processes.items():
            if not prof.get("samples"):
                continue
            tops = ", ".join(f"{n} {p} %" for n, p in prof["inclusive_percent"][:6])
            own = ", ".join(f"{n} {p} %" for n, p in prof["self_percent"][:4])
            lines.append(
                f"- {process}: busy {prof['busy_percent_of_one_core']} % of a core;"
                f" inclusive: {tops}; self: {own}"
            )
    if results.get("errors"):
        lines += ["", f"**Phases that failed**: {results['errors']}"]
    lines += ["", f"Phase seconds: {results.get('seconds')}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def distributions(results: dict[str, Any]) -> dict[str, list[float]]:
    named = {
        "floor per message (JetStream → txn → ack)": _get(results, "floor", "per_message"),
        "floor NATS request/reply": _get(results, "floor", "request_reply"),
        "floor ib_async LMT → Submitted": _get(results, "floor", "direct_lmt"),
        "floor ib_async MKT → Filled": _get(results, "floor", "direct_mkt"),
        "execution → committed": _get(results, "system", "latency", "committed"),
        "tick → exit": _get(results, "tick_exit", "summary"),
        "API → broker": _get(results, "system", "api", "submitted"),
    }
    return {k: v["samples_ms"] for k, v in named.items() if v and v.get("samples_ms")}


def plot(results: dict[str, Any], stem: Path) -> list[str]:
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    series = distributions(results)
    if not series:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, samples in series.items():
        ordered = sorted(samples)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, ys, where="post", label=f"{name} (n={len(ordered)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("fraction of samples ≤ x")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.axhline(0.99, color="grey", lw=0.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("make bench: latency distributions (CDF)")
    path = stem.with_name(stem.name + "-latency-cdf.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))

    cols = 2
    rows = (len(series) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3 * rows), squeeze=False)
    for ax, (name, samples) in zip(axes.flat, series.items(), strict=False):
        ordered = sorted(samples)
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]
        ax.hist(samples, bins=60, color="tab:blue", alpha=0.8)
        ax.axvline(p50, color="tab:green", lw=1, label=f"p50 {p50:.2f} ms")
        ax.axvline(p99, color="tab:red", lw=1, label=f"p99 {p99:.2f} ms")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path = stem.with_name(stem.name + "-latency-histograms.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(str(path))
    return written


# --------------------------------------------------------------------------- main


def exactness_failures(results: dict[str, Any]) -> list[str]:
    failures = [f"phase {name} failed: {err}" for name, err in results["errors"].items()]
    sy = results.get("system")
    if sy is not None and not sy.get("exact"):
        bad = [k for k, ok in (sy.get("checks") or {}).items() if not ok]
        failures.append(f"system books not exact: {bad} {sy.get('check_details')}")
    te = results.get("tick_exit")
    if te is not None and te.get("failures"):
        failures += [f"tick → exit: {f}" for f in te["failures"]]
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples (about 1.5 min)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy every process of every phase (stacks in bench/results/<stamp>-py-spy/)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("floor", "system", "tick_exit"),
        help="run only this phase (repeatable; for working on the harness)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    latency.KEEP_SAMPLES = True
    mode = "quick" if args.quick else "full"
    params = DEFAULTS[mode]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    started = time.perf_counter()
    try:
        profile_dir = RESULTS / f"{stamp}-py-spy" if args.profile else None
        results = asyncio.run(run_phases(params, set(args.only or ()), profile_dir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: every process this run started has been stopped", file=sys.stderr)
        raise SystemExit(130) from None
    meta = {
        "when": stamp,
        "mode": mode,
        "params": params,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    rows = figures(results)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / stamp
    meta["plots"] = plot(results, stem)
    summary = markdown(rows, results, meta)
    stem.with_suffix(".md").write_text(summary)
    stem.with_suffix(".json").write_text(
        json.dumps(
            {"meta": meta, "figures": [f.as_dict() for f in rows], "results": results},
            indent=2,
            default=str,
        )
        + "\n"
    )
    print("\n" + summary)
    print(f"written {stem}.json, {stem}.md, " + ", ".join(meta["plots"]))
    failures = exactness_failures(results)
    for failure in failures:
        print(f"FAILED: {failure}")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
