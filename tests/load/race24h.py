#!/usr/bin/env python3
"""A 24-hour race of 30 simulated cars at 20 Hz, run at 20x time (72 minutes),
against the shipped nats.conf's JetStream limits and `paddock serve`'s defaults,
checking that what paddock keeps stays within the bytes docs/BENCHMARKS.md
states ("What a lap trace costs") for the whole race.

    python3 -m venv /tmp/race-venv && /tmp/race-venv/bin/pip install nats-py
    cargo build --release --bin paddock    # or PADDOCK_BIN=<a copy of it>
    /tmp/race-venv/bin/python tests/load/race24h.py            # 72 minutes
    /tmp/race-venv/bin/python tests/load/race24h.py --hours 1  # 3 minutes

One bound is lifted, and why: --max-frame-rate. At 20x time a car at 20 Hz of
race time sends 400 frames a real second, past the default 100 a session may
send; the race's frames are the point. Everything else is serve's default.

Every --sample seconds it reads, over NATS: the trace stream's and every
bucket's bytes against their max_bytes, each session's chunks in the trace
stream against max_msgs_per_subject, `sessions.stats` (frames and laps held
against --max-memory, the ingest queue, frames recorded and left out); and the
processor's resident memory and the broker's store on disk. At the end each car's
last complete lap and best lap are read back with sessions.trace (the best
lap from the best-lap stream once the trace stream has let it go). One JSON line
per sample goes to --out; a summary and the verdict to stdout; exit 1 if a bound
was crossed or a frame lost.
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import nats

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_config(port, http_port, store):
    """The shipped nats.conf with its ports and store moved and no WebSocket:
    its JetStream limits are the ones under test."""
    with open(os.path.join(ROOT, "nats.conf")) as f:
        conf = f.read()
    conf = re.sub(r"(?m)^port: \d+", f"port: {port}", conf)
    conf = re.sub(r"(?m)^http_port: \d+", f"http_port: {http_port}", conf)
    conf = re.sub(r'store_dir: "[^"]*"', f'store_dir: "{store}"', conf)
    conf = re.sub(r"(?ms)^websocket \{.*?^\}", "", conf)
    limits = {k: v for k, v in re.findall(r"(max_file_store|max_memory_store): (\S+)", conf)}
    return conf, limits


def to_bytes(text):
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", text.strip(), re.I)
    return int(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(d, name))
            except OSError:
                pass
    return total


async def ask(nc, subject, body=b"{}", timeout=10):
    msg = await nc.request(subject, body, timeout=timeout)
    if msg.headers and msg.headers.get("Nats-Service-Error-Code"):
        return {"error": msg.headers.get("Nats-Service-Error-Code"), "body": msg.data.decode()}
    return json.loads(msg.data)


async def stream_info(nc, name, subjects=False):
    body = {"subjects_filter": ">"} if subjects else {}
    info = await ask(nc, f"$JS.API.STREAM.INFO.{name}", json.dumps(body).encode())
    return info


async def sample(nc, started, serve_pid, store):
    names = (await ask(nc, "$JS.API.STREAM.NAMES", b"{}")).get("streams") or []
    streams = {}
    worst_session = None
    for name in names:
        info = await stream_info(nc, name, subjects="trace" in name)
        cfg, state = info["config"], info["state"]
        streams[name] = {"bytes": state["bytes"], "max_bytes": cfg.get("max_bytes", -1),
                         "msgs": state["messages"]}
        if "trace" in name:
            per = state.get("subjects") or {}
            limit = cfg.get("max_msgs_per_subject", -1)
            most = max(per.values()) if per else 0
            worst_session = {"most_chunks": most, "max_msgs_per_subject": limit,
                             "sessions": len(per)}
    stats = await ask(nc, "sessions.stats")
    return {
        "t": round(time.monotonic() - started, 1),
        "streams": streams,
        "trace_per_session": worst_session,
        "stats": {k: stats.get(k) for k in ("live_sessions", "telemetry_frames", "laps_completed",
                                            "lap_records", "laps_dropped", "laps_trimmed",
                                            "trace_frames_recorded", "trace_frames_unrecorded",
                                            "memory", "ingest", "rejected_total", "rejected")},
        "processor_rss": rss(serve_pid),
        "store_on_disk": du(store),
    }


def crossings(s, file_limit):
    out = []
    for name, st in s["streams"].items():
        if st["max_bytes"] > 0 and st["bytes"] > st["max_bytes"]:
            out.append(f"{name}: {st['bytes']} B > max_bytes {st['max_bytes']}")
    per = s["trace_per_session"]
    if per and per["max_msgs_per_subject"] > 0 and per["most_chunks"] > per["max_msgs_per_subject"]:
        out.append(f"a session holds {per['most_chunks']} chunks > {per['max_msgs_per_subject']}")
    mem = s["stats"]["memory"] or {}
    if mem and mem["frame_bytes"] + mem["lap_bytes"] > mem["budget_bytes"]:
        out.append(f"processor holds {mem['frame_bytes'] + mem['lap_bytes']} B > --max-memory")
    ingest = s["stats"]["ingest"] or {}
    if ingest.get("peak_bytes", 0) > ingest.get("buffer_bytes", 1 << 62):
        out.append("ingest queue past --ingest-buffer-bytes")
    if s["store_on_disk"] > file_limit:
        out.append(f"broker store {s['store_on_disk']} B > max_file_store {file_limit}")
    return out


async def race(args):
    work = tempfile.mkdtemp(prefix="paddock-race24h-")
    port, http_port = free_port(), free_port()
    store = os.path.join(work, "js")
    conf, limits = broker_config(port, http_port, store)
    file_limit = to_bytes(limits["max_file_store"])
    with open(os.path.join(work, "nats.conf"), "w") as f:
        f.write(conf)
    url = f"nats://127.0.0.1:{port}"
    paddock = os.environ.get("PADDOCK_BIN") or os.path.join(ROOT, "target", "release", "paddock")
    server_bin = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    logs = {n: open(os.path.join(work, n + ".log"), "w") for n in ("broker", "serve", "monitor")}
    broker = subprocess.Popen([server_bin, "-c", os.path.join(work, "nats.conf")],
                              stdout=logs["broker"], stderr=subprocess.STDOUT)
    procs = [broker]
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        rate = args.hz * args.time_scale
        serve = subprocess.Popen([paddock, "serve", "--nats-url", url,
                                  "--max-frame-rate", str(rate * 1.25)],
                                 stdout=logs["serve"], stderr=subprocess.STDOUT)
        procs.append(serve)
        nc = await nats.connect(url)
        for _ in range(200):
            try:
                await ask(nc, "sessions.stats", timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        seconds = args.hours * 3600 / args.time_scale
        monitor = subprocess.Popen([paddock, "monitor", "--nats-url", url,
                                    "--sessions", str(args.cars), "--hz", str(rate),
                                    "--time-scale", str(args.time_scale),
                                    "--duration", f"{seconds:.0f}s", "--progress", "60s"],
                                   stdout=logs["monitor"], stderr=subprocess.STDOUT)
        procs.append(monitor)
        print(f"race: {args.cars} cars, {args.hours} h at {args.hz:g} Hz of race time, "
              f"{args.time_scale:g}x: {seconds / 60:.0f} min; logs in {work}", flush=True)
        started = time.monotonic()
        samples, crossed = [], []
        with open(args.out, "w") as out:
            while monitor.poll() is None:
                await asyncio.sleep(args.sample)
                s = await sample(nc, started, serve.pid, store)
                samples.append(s)
                crossed += [f"t={s['t']}s: {c}" for c in crossings(s, file_limit)]
                out.write(json.dumps(s) + "\n")
                out.flush()
                st = s["stats"]
                traces = next((v for k, v in s["streams"].items() if "trace" in k), {})
                print(f"  {s['t'] / 60:5.1f} min (race hour {s['t'] * args.time_scale / 3600:4.1f}): "
                      f"{st['telemetry_frames']:>10,} frames, {st['laps_completed']:>6,} laps, "
                      f"traces {traces.get('bytes', 0) / 2**20:6.1f} / {traces.get('max_bytes', 0) / 2**20:.0f} MiB, "
                      f"processor {s['processor_rss'] / 2**20:5.1f} MiB, disk {s['store_on_disk'] / 2**20:6.1f} MiB",
                      flush=True)
        # Let the writer finish the last chunks (a silent session's chunk is written).
        await asyncio.sleep(5)
        last = await sample(nc, started, serve.pid, store)
        crossed += [f"end: {c}" for c in crossings(last, file_limit)]
        # Each car's last complete lap and best lap, read back.
        listed = await ask(nc, "sessions.list", json.dumps({"limit": 1000}).encode())
        ids = [s["session_id"] for s in listed.get("sessions", [])]
        reads = {"last": [0, 0], "best": [0, 0]}
        for sid in ids:
            # The last page of the car's lap records: its last complete lap.
            page, records = {"limit": 1000}, []
            while True:
                laps = await ask(nc, f"sessions.laps.{sid}", json.dumps(page).encode())
                records = laps.get("laps") or records
                if laps.get("next_from_lap") is None:
                    break
                page = {"limit": 1000, "from_lap": laps["next_from_lap"]}
            wanted = {"best": "best"}
            if records:
                wanted["last"] = records[-1]["lap"]
            for kind, lap in wanted.items():
                reads[kind][1] += 1
                r = await ask(nc, f"sessions.trace.{sid}",
                              json.dumps({"lap": lap, "channels": ["speed"], "step_m": 5}).encode(), timeout=30)
                if "error" not in r and r.get("frames", 0) > 0:
                    reads[kind][0] += 1
        st = last["stats"]
        peak = lambda f: max(f(s) for s in samples + [last])
        traces_peak = peak(lambda s: next((v["bytes"] for k, v in s["streams"].items() if "trace" in k), 0))
        summary = {
            "cars": args.cars, "race_hours": args.hours, "time_scale": args.time_scale,
            # What the cars drove: fewer frames than asked if the monitor fell behind.
            "race_hours_driven": round(st["telemetry_frames"] / args.cars / args.hz / 3600, 2),
            "frames": st["telemetry_frames"], "laps": st["laps_completed"],
            "recorded": st["trace_frames_recorded"], "unrecorded": st["trace_frames_unrecorded"],
            "rejected": st["rejected"], "ingest_dropped": (st["ingest"] or {}).get("dropped"),
            "traces_peak_bytes": traces_peak,
            "traces_max_bytes": next((v["max_bytes"] for k, v in last["streams"].items() if "trace" in k), None),
            "chunks_per_session_peak": peak(lambda s: (s["trace_per_session"] or {}).get("most_chunks", 0)),
            "max_msgs_per_subject": (last["trace_per_session"] or {}).get("max_msgs_per_subject"),
            "streams_end": last["streams"],
            "processor_rss_peak": peak(lambda s: s["processor_rss"]),
            "memory_end": st["memory"], "ingest_peak_bytes": (st["ingest"] or {}).get("peak_bytes"),
            "store_on_disk_peak": peak(lambda s: s["store_on_disk"]), "max_file_store": file_limit,
            "traces_read_back": {k: f"{v[0]} of {v[1]}" for k, v in reads.items()},
        }
        lost = []
        if st["rejected_total"]:
            lost.append(f"{st['rejected_total']} frames refused: {st['rejected']}")
        if (st["ingest"] or {}).get("dropped"):
            lost.append(f"{st['ingest']['dropped']} frames dropped by the ingest queue")
        if st["trace_frames_unrecorded"]:
            lost.append(f"{st['trace_frames_unrecorded']} frames left out of the record")
        print(json.dumps(summary, indent=2))
        for c in crossed + lost:
            print("FAIL:", c)
        print("verdict:", "within every bound, nothing lost" if not (crossed or lost) else "FAILED")
        await nc.close()
        return 0 if not (crossed or lost) else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cars", type=int, default=30)
    ap.add_argument("--hours", type=float, default=24.0, help="race hours")
    ap.add_argument("--hz", type=float, default=20.0, help="frames per second of race time, per car")
    ap.add_argument("--time-scale", type=float, default=20.0)
    ap.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--out", default="/tmp/race24h.jsonl")
    sys.exit(asyncio.run(race(ap.parse_args())))


if __name__ == "__main__":
    main()
