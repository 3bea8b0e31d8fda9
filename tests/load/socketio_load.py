#!/usr/bin/env python3
"""Socket.IO publish->receive latency load generator for the Race Dashboard protocol.

Works against the origin (1Lap/dashboard, Flask-SocketIO) and paddock's gateway
(`paddock serve --http-addr ...`, /socket.io/), which speak the same events:

  monitor   -> request_session_id {}                    -> session_id_assigned {session_id}
  dashboard -> join_session {session_id}                 (origin: only for an existing id)
  monitor   -> telemetry_update {session_id, telemetry}  -> room: telemetry_update {session_id, telemetry}
  paddock only: paddock_error {event, reason, message} to the sender of a refused event;
                optional ?token=... (--gateway-token) in the URL (--token).

M monitors send frames at R Hz each (staggered phases); each monitor is followed by
one dashboard client that joined its session.  Every frame carries `seq`, `sent_ns`
(CLOCK_MONOTONIC, system-wide on Linux: sender and receiver must be on the same
machine) and `w` (1 if its send was due inside the measured window).  Clients are
python-socketio's threaded `socketio.Client`, as the origin's monitor uses.

Output: one JSON line on stdout (progress on stderr).
"""
import argparse
import array
import heapq
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import threading
import time

import socketio

# The origin monitor's frame shape (its LMU reader, in the garage), as in
# paddock's tests/data/origin-telemetry-lmu.json.
DEFAULT_TELEMETRY = {
    "timestamp": "2025-11-22T06:16:45.645070Z",
    "lap": 1, "position": 0, "lap_time": -2.758984327316284,
    "fuel": 75.0, "fuel_capacity": 75.0,
    "tire_pressures": {"rl": 0.0, "rr": 0.0, "fl": 0.0, "fr": 0.0},
    "tire_temps": {"rl": -273.15, "rr": -273.15, "fl": -273.15, "fr": -273.15},
    "tire_wear": {"rl": 1.0, "rr": 1.0, "fl": 1.0, "fr": 1.0},
    "brake_temps": {"rl": 307.5762634277344, "rr": 307.5762634277344,
                    "fl": 307.5762634277344, "fr": 307.5762634277344},
    "engine_water_temp": 0.0, "track_temp": 40.30604368550149,
    "ambient_temp": 28.903763440860246, "speed": 0.005646436553012142,
    "gear": 0, "rpm": 0.0, "player_name": "A. Driver",
    "car_name": "DKR Engineering #3:ELMS25",
    "track_name": "Autodromo Enzo e Dino Ferrari", "session_type": "Practice",
}
DEFAULT_FRAME_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "origin-telemetry-lmu.json")
SAMPLE_SID = "3f2b8c1e-9a4d-4e7b-8c61-2d5f0a9b7e13"


def log(*a):
    print(f"[{os.getpid()}]", *a, file=sys.stderr, flush=True)


def wire_len(sid, telemetry):
    """Bytes of the Socket.IO packet `42["telemetry_update",{...}]` as python-socketio encodes it."""
    return 2 + len(json.dumps(["telemetry_update", {"session_id": sid, "telemetry": telemetry}],
                              separators=(",", ":")))


def build_template(args):
    telemetry = dict(DEFAULT_TELEMETRY)
    path = args.frame_file
    if path and os.path.exists(path):
        with open(path) as f:
            loaded = json.load(f)
        telemetry = loaded.get("telemetry", loaded)
    telemetry = dict(telemetry)
    # Fields the generator sets per frame (worst-case widths for sizing).
    telemetry.update({"seq": 10**9, "sent_ns": 10**15, "w": 1})
    size = wire_len(SAMPLE_SID, telemetry)
    target = args.frame_bytes
    if target and size < target:
        telemetry["pad"] = ""
        pad = target - wire_len(SAMPLE_SID, telemetry)
        telemetry["pad"] = "x" * max(pad, 0)
    elif target and size > target * 1.05:
        # Well over: trim fields from the end until it fits (keeps the generator's
        # fields); within 5 % over, keep the frame whole.
        for key in [k for k in reversed(list(telemetry)) if k not in ("seq", "sent_ns", "w")]:
            if wire_len(SAMPLE_SID, telemetry) <= target:
                break
            del telemetry[key]
    return telemetry, wire_len(SAMPLE_SID, telemetry)


def url_with_token(url, token):
    if not token:
        return url
    return url + ("&" if "?" in url else "?") + "token=" + token


def make_client(args):
    sio = socketio.Client(reconnection=False, handle_sigint=False)
    if not args.thread_per_message:
        # python-engineio's threaded client starts a new thread for every incoming
        # message; run handlers inline in the reader thread instead so the
        # generator's own overhead stays low (events stay in order).
        eio = sio.eio
        orig = eio._trigger_event

        def trigger(event, *a, **kw):
            if event == "message":
                kw["run_async"] = False
            return orig(event, *a, **kw)

        eio._trigger_event = trigger
    return sio


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


# --------------------------------------------------------------------------- worker
def worker(args, indices, total_monitors, conn):
    try:
        _worker(args, indices, total_monitors, conn)
    except Exception as e:  # report instead of hanging the parent
        import traceback
        traceback.print_exc()
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except Exception:
            pass


def _worker(args, indices, total_monitors, conn):
    url = url_with_token(args.url, args.token)
    transports = args.transports.split(",") if args.transports else None
    template, frame_bytes = build_template(args)
    errors = {}
    errors_lock = threading.Lock()
    disconnects = [0]
    stopping = threading.Event()

    def on_paddock_error(data):
        reason = (data or {}).get("reason", "?") if isinstance(data, dict) else "?"
        key = f"{(data or {}).get('event', '?')}:{reason}" if isinstance(data, dict) else reason
        with errors_lock:
            errors[key] = errors.get(key, 0) + 1

    monitors = []  # (global index, sio, session_id)
    dashboards = []  # per monitor: state dict
    clients = []

    def on_disconnect_factory():
        def _d(*_a):
            if not stopping.is_set():
                disconnects[0] += 1
        return _d

    for g in indices:
        # Monitor: connect, ask for a session id, wait for it.
        mon = make_client(args)
        got = threading.Event()
        box = {}

        def on_assigned(data, box=box, got=got):
            box["sid"] = data["session_id"]
            got.set()

        mon.on("session_id_assigned", on_assigned)
        mon.on("paddock_error", on_paddock_error)
        mon.connect(url, transports=transports, wait_timeout=10)
        clients.append(mon)
        mon.emit("request_session_id", {})
        if not got.wait(10):
            raise RuntimeError(f"monitor {g}: no session_id_assigned within 10 s")
        sid = box["sid"]

        # Dashboard: connect, join the session (the origin page emits join_session on connect).
        dash = make_client(args)
        state = {"lat": array.array("q"), "seen": set(), "dup": 0, "other": 0, "all": 0}

        def on_telemetry(data, state=state):
            now = time.monotonic_ns()
            t = data.get("telemetry") if isinstance(data, dict) else None
            if not isinstance(t, dict) or "sent_ns" not in t:
                state["other"] += 1
                return
            state["all"] += 1
            if not t.get("w"):
                return
            seq = t.get("seq")
            if seq in state["seen"]:
                state["dup"] += 1
                return
            state["seen"].add(seq)
            state["lat"].append(now - int(t["sent_ns"]))

        dash.on("telemetry_update", on_telemetry)
        dash.on("paddock_error", on_paddock_error)
        dash.on("disconnect", on_disconnect_factory())
        dash.connect(url, transports=transports, wait_timeout=10)
        clients.append(dash)
        dash.emit("join_session", {"session_id": sid})
        mon.on("disconnect", on_disconnect_factory())
        monitors.append((g, mon, sid))
        dashboards.append(state)

    conn.send(("ready", {"monitors": len(monitors), "frame_bytes": frame_bytes,
                         "transport": clients[0].transport() if clients else None}))
    msg = conn.recv()
    assert msg[0] == "start"
    t0 = msg[1]

    period = int(1e9 / args.hz)
    w_start = t0 + int(args.warmup * 1e9)
    w_end = w_start + int(args.seconds * 1e9)
    heap = []
    for k, (g, mon, sid) in enumerate(monitors):
        phase = int(period * g / total_monitors)
        heap.append((t0 + phase, k, 0))
    heapq.heapify(heap)

    lags = array.array("q")
    sent_w = 0
    sent_all = 0
    send_errors = 0
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    mono0 = time.monotonic_ns()
    frame = dict(template)
    while heap:
        due, k, seq = heap[0]
        if due >= w_end:
            break
        now = time.monotonic_ns()
        if due > now:
            time.sleep((due - now) / 1e9)
        g, mon, sid = monitors[k]
        in_w = w_start <= due < w_end
        frame = dict(template)
        frame["seq"] = seq
        frame["w"] = 1 if in_w else 0
        sent = time.monotonic_ns()
        frame["sent_ns"] = sent
        try:
            mon.emit("telemetry_update", {"session_id": sid, "telemetry": frame})
        except Exception:
            send_errors += 1
        if in_w:
            sent_w += 1
            lags.append(sent - due)
        sent_all += 1
        heapq.heapreplace(heap, (due + period, k, seq + 1))
    mono1 = time.monotonic_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    # Drain: let in-flight frames arrive.
    time.sleep(args.drain)
    stopping.set()
    for c in clients:
        try:
            c.disconnect()
        except Exception:
            pass

    lat = array.array("q")
    dup = other = rcv_all = 0
    for st in dashboards:
        lat.extend(st["lat"])
        dup += st["dup"]
        other += st["other"]
        rcv_all += st["all"]
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    conn.send(("result", {
        "sent_w": sent_w, "sent_all": sent_all, "send_errors": send_errors,
        "lat": lat.tobytes(), "lags": lags.tobytes(), "dup": dup, "other": other,
        "rcv_all": rcv_all, "errors": errors, "disconnects": disconnects[0],
        "cpu_s": cpu, "run_s": (mono1 - mono0) / 1e9, "frame_bytes": frame_bytes,
    }))


# --------------------------------------------------------------------------- parent
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:5000",
                    help="server root; Socket.IO at <url>/socket.io/ (origin :5000, paddock its --http-addr)")
    ap.add_argument("--server", choices=["origin", "paddock"], default="origin")
    ap.add_argument("--token", default=None, help="paddock --gateway-token: sent as ?token=... in the URL")
    ap.add_argument("--monitors", type=int, default=2)
    ap.add_argument("--hz", type=float, default=100.0, help="frames per second per monitor")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured duration (after warmup)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds sent but not measured")
    ap.add_argument("--drain", type=float, default=2.0, help="seconds to wait for in-flight frames")
    ap.add_argument("--processes", type=int, default=1, help="split monitors over N processes")
    ap.add_argument("--frame-bytes", type=int, default=800,
                    help="size of the telemetry_update Socket.IO packet on the wire (0: as is)")
    ap.add_argument("--frame-file", default=DEFAULT_FRAME_FILE,
                    help="JSON frame ({telemetry:{...}} or the telemetry object); built-in if missing")
    ap.add_argument("--transports", default="",
                    help="e.g. 'websocket' to skip the polling handshake; default polling+upgrade like the origin's clients")
    ap.add_argument("--thread-per-message", action="store_true",
                    help="keep python-engineio's thread-per-incoming-message dispatch (stock client behaviour)")
    args = ap.parse_args()
    if args.server == "origin" and args.token:
        log("warning: the origin ignores --token")
    if args.monitors < 1 or args.processes < 1 or args.hz <= 0:
        ap.error("monitors, processes and hz must be positive")
    nproc = min(args.processes, args.monitors)

    ctx = mp.get_context("fork")
    groups = [list(range(i, args.monitors, nproc)) for i in range(nproc)]
    procs, conns = [], []
    for grp in groups:
        a, b = ctx.Pipe()
        p = ctx.Process(target=worker, args=(args, grp, args.monitors, b), daemon=True)
        p.start()
        procs.append(p)
        conns.append(a)

    def fail(msg):
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
        print(json.dumps({"server": args.server, "url": args.url, "error": msg}), flush=True)
        sys.exit(1)

    infos = []
    setup_deadline = time.monotonic() + 30 + 0.5 * args.monitors
    for c in conns:
        if not c.poll(max(0.1, setup_deadline - time.monotonic())):
            fail("timeout connecting clients")
        m = c.recv()
        if m[0] != "ready":
            fail(m[1])
        infos.append(m[1])
    log(f"{args.monitors} monitors + {args.monitors} dashboards connected in {nproc} process(es); "
        f"transport {infos[0]['transport']}, frame {infos[0]['frame_bytes']} B")
    time.sleep(0.5)  # let joins settle before the first frame
    t0 = time.monotonic_ns() + int(0.2e9)
    for c in conns:
        c.send(("start", t0))

    results = []
    deadline = time.monotonic() + args.warmup + args.seconds + args.drain + 30
    for c in conns:
        if not c.poll(max(0.1, deadline - time.monotonic())):
            fail("timeout waiting for results")
        m = c.recv()
        if m[0] != "result":
            fail(m[1])
        results.append(m[1])
    for p in procs:
        p.join(10)

    lat = array.array("q")
    lags = array.array("q")
    errors = {}
    for r in results:
        lat.frombytes(r["lat"])
        lags.frombytes(r["lags"])
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    lat = sorted(lat)
    lags = sorted(lags)
    sent = sum(r["sent_w"] for r in results)
    received = len(lat)
    ms = lambda ns: None if ns is None else round(ns / 1e6, 3)
    out = {
        "server": args.server, "url": args.url, "monitors": args.monitors, "hz": args.hz,
        "seconds": args.seconds, "warmup": args.warmup, "processes": nproc,
        "frame_bytes": results[0]["frame_bytes"] if results else None,
        "target_fps": round(args.monitors * args.hz, 1),
        "sent": sent, "sent_fps": round(sent / args.seconds, 1),
        "received": received, "received_fps": round(received / args.seconds, 1),
        "lost": sent - received,
        "loss_pct": round(100.0 * (sent - received) / sent, 3) if sent else None,
        "duplicates": sum(r["dup"] for r in results),
        "p50_ms": ms(pct(lat, 50)), "p90_ms": ms(pct(lat, 90)), "p99_ms": ms(pct(lat, 99)),
        "p999_ms": ms(pct(lat, 99.9)), "max_ms": ms(lat[-1] if lat else None),
        "mean_ms": ms(sum(lat) / len(lat)) if lat else None,
        # Generator health: how late sends were vs their schedule, and its CPU use
        # (a process near 100 % of a core is GIL-bound: add --processes).
        "send_lag_p50_ms": ms(pct(lags, 50)), "send_lag_p99_ms": ms(pct(lags, 99)),
        "gen_cpu_pct_total": round(100 * sum(r["cpu_s"] for r in results) /
                                   max(1e-9, max(r["run_s"] for r in results)), 1) if results else None,
        "gen_cpu_pct_max_proc": round(max(100 * r["cpu_s"] / max(1e-9, r["run_s"]) for r in results), 1)
        if results else None,
        "send_errors": sum(r["send_errors"] for r in results),
        "disconnects": sum(r["disconnects"] for r in results),
        "server_errors": errors,
        "non_generator_updates": sum(r["other"] for r in results),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
