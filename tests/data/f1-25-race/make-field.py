#!/usr/bin/env python3
"""A 22-car F1 25 race in three ticks, as packets, and the field each tick
should give: the fixtures of `a_race_built_by_f1_packets_gives_its_field_exactly`
(src/sources/f1.rs), an implementation of EA's layouts other than ours.

Run (Python 3.10+), from the repository's root:

    python3 -m venv /tmp/f1p && /tmp/f1p/bin/pip install f1-packets==2026.1.1
    /tmp/f1p/bin/python tests/data/f1-25-race/make-field.py

f1-packets 2026.1.1 (MIT, Gabriele N. Tornetta) encodes the 2026 format
(packet format 2026, 24 cars). Of what the field reads, two of its structures
are F1 25's byte for byte and are used here: the packet header (29 bytes) and
one car's lap data (57 bytes). Its participant (60 bytes: driver, network and
team ids widened to u16) and car status (59: ERS harvest limit added) are not,
so those two are written below from EA's "F1 25 UDP specification", on
f1-packets' own ctypes base. One packet of its 2026 format is kept too
(`2026-LapData.bin`): the decoder must leave it unread, as another format.

The expected fields are worked out here from the scenario and the spec's
meanings (result status, pit status, team ids, visual compounds), not from
paddock's decoder. Every number is an exact binary fraction or whole
milliseconds, so the comparison in Rust is exact.
"""

import ctypes
import json
import pathlib

from f1 import packets as f1p

OUT = pathlib.Path(__file__).resolve().parent
CARS = 22
PLAYER = 7
SESSION_UID = 0x5EED_F1E1_D000_0042


class ParticipantData25(f1p.Packet):
    """F1 25's ParticipantData (57 bytes)."""

    _fields_ = [
        ("ai_controlled", ctypes.c_uint8),
        ("driver_id", ctypes.c_uint8),
        ("network_id", ctypes.c_uint8),
        ("team_id", ctypes.c_uint8),
        ("my_team", ctypes.c_uint8),
        ("race_number", ctypes.c_uint8),
        ("nationality", ctypes.c_uint8),
        ("name", ctypes.c_char * 32),
        ("your_telemetry", ctypes.c_uint8),
        ("show_online_names", ctypes.c_uint8),
        ("tech_level", ctypes.c_uint16),
        ("platform", ctypes.c_uint8),
        ("num_colours", ctypes.c_uint8),
        ("livery_colours", f1p.LiveryColour * 4),
    ]


class PacketParticipantsData25(f1p.Packet):
    _fields_ = [
        ("header", f1p.PacketHeader),
        ("num_active_cars", ctypes.c_uint8),
        ("participants", ParticipantData25 * CARS),
    ]


class CarStatusData25(f1p.Packet):
    """F1 25's CarStatusData (55 bytes)."""

    _fields_ = [
        ("traction_control", ctypes.c_uint8),
        ("anti_lock_brakes", ctypes.c_uint8),
        ("fuel_mix", ctypes.c_uint8),
        ("front_brake_bias", ctypes.c_uint8),
        ("pit_limiter_status", ctypes.c_uint8),
        ("fuel_in_tank", ctypes.c_float),
        ("fuel_capacity", ctypes.c_float),
        ("fuel_remaining_laps", ctypes.c_float),
        ("max_rpm", ctypes.c_uint16),
        ("idle_rpm", ctypes.c_uint16),
        ("max_gears", ctypes.c_uint8),
        ("drs_allowed", ctypes.c_uint8),
        ("drs_activation_distance", ctypes.c_uint16),
        ("actual_tyre_compound", ctypes.c_uint8),
        ("visual_tyre_compound", ctypes.c_uint8),
        ("tyres_age_laps", ctypes.c_uint8),
        ("vehicle_fia_flags", ctypes.c_int8),
        ("engine_power_ice", ctypes.c_float),
        ("engine_power_mguk", ctypes.c_float),
        ("ers_store_energy", ctypes.c_float),
        ("ers_deploy_mode", ctypes.c_uint8),
        ("ers_harvested_this_lap_mguk", ctypes.c_float),
        ("ers_harvested_this_lap_mguh", ctypes.c_float),
        ("ers_deployed_this_lap", ctypes.c_float),
        ("network_paused", ctypes.c_uint8),
    ]


class PacketCarStatusData25(f1p.Packet):
    _fields_ = [
        ("header", f1p.PacketHeader),
        ("car_status_data", CarStatusData25 * CARS),
    ]


class PacketLapData25(f1p.Packet):
    """F1 25's lap data packet: f1-packets' LapData, 22 of them."""

    _fields_ = [
        ("header", f1p.PacketHeader),
        ("lap_data", f1p.LapData * CARS),
        ("time_trial_pb_car_idx", ctypes.c_uint8),
        ("time_trial_rival_car_idx", ctypes.c_uint8),
    ]


# The spec's sizes, as the decoder checks them.
assert f1p.PacketHeader.size() == 29
assert f1p.LapData.size() == 57
assert ParticipantData25.size() == 57 and CarStatusData25.size() == 55
assert PacketLapData25.size() == 1285
assert PacketParticipantsData25.size() == 1284
assert PacketCarStatusData25.size() == 1239

# The spec's appendices, for the expected field.
TEAMS = {0: "Mercedes", 1: "Ferrari", 2: "Red Bull Racing", 3: "Williams", 4: "Aston Martin",
         5: "Alpine", 6: "RB", 7: "Haas", 8: "McLaren", 9: "Sauber", 104: "F1 Custom Team"}
VISUAL = {16: "soft", 17: "medium", 18: "hard", 7: "inter", 8: "wet"}
# (name, race number, team id) by car index; the player's car is index 7, in
# a custom team (My Team: 11 teams, 22 cars).
GRID = [
    ("VERSTAPPEN", 1, 2), ("NORRIS", 4, 8), ("LECLERC", 16, 1), ("PIASTRI", 81, 8),
    ("RUSSELL", 63, 0), ("HAMILTON", 44, 1), ("SAINZ", 55, 3), ("DRIVER", 7, 104),
    ("ALONSO", 14, 4), ("GASLY", 10, 5), ("TSUNODA", 22, 2), ("ALBON", 23, 3),
    ("STROLL", 18, 4), ("OCON", 31, 7), ("HULKENBERG", 27, 9), ("LAWSON", 30, 6),
    ("ANTONELLI", 12, 0), ("BEARMAN", 87, 7), ("HADJAR", 6, 6), ("BORTOLETO", 5, 9),
    ("COLAPINTO", 43, 5), ("TEAMMATE", 8, 104),
]


def car(index, position, gap_ms, last_ms, compound=17, tyre_age=9, pit=0, stops=0,
        result=2, lap=12, distance=2000.5, s1_ms=31250, s2_ms=0, penalties=0):
    return dict(index=index, position=position, gap_ms=gap_ms, last_ms=last_ms,
                compound=compound, tyre_age=tyre_age, pit=pit, stops=stops, result=result,
                lap=lap, distance=distance, s1_ms=s1_ms, s2_ms=s2_ms, penalties=penalties)


def tick1():
    # Lap 12, all 22 running, 1.25 s apart from P2 down; the player (7) P3.
    order = [3, 0, 7, 1, 2, 4, 5, 12, 6, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    return [car(i, p + 1, 1250 * p, 91000 + 125 * p, tyre_age=9 + p % 3)
            for p, i in enumerate(order)]


def tick2():
    # The player passes car 0 for P2 (0.5 s ahead of it now); car 12 (P8) is
    # in the pit lane on its in-lap, still P8 (the game keeps the place until
    # the line); car 3 gets a 5 s penalty.
    cars = {c["index"]: c for c in tick1()}
    cars[7].update(position=2, gap_ms=1000)
    cars[0].update(position=3, gap_ms=1500)
    cars[12].update(pit=1)
    cars[3].update(penalties=5)
    return list(cars.values())


def tick3():
    # Lap 13: every car crossed the line (a new last lap; the leader's is its
    # best). Car 12 is out on hards, 0 laps old, one stop, down to P21, the
    # last running car (75.123 s behind: the minutes part of the split time).
    # Car 20 retired and is classified last; the cars behind P8 move up.
    cars = {c["index"]: dict(c) for c in tick2()}
    for c in cars.values():
        c.update(lap=13, distance=150.0, s1_ms=0, last_ms=c["last_ms"] + 500)
    cars[3]["last_ms"] = 90500
    order = sorted(cars.values(), key=lambda c: c["position"])
    order = [c for c in order if c["index"] not in (12, 20)]
    order.append(cars[12])
    order.append(cars[20])
    for p, c in enumerate(order):
        c["position"] = p + 1
        c["gap_ms"] = 1250 * p if c["index"] not in (7, 0) else c["gap_ms"]
    cars[12].update(pit=0, stops=1, compound=18, tyre_age=0, gap_ms=75123)
    cars[20].update(result=7, gap_ms=0, lap=12, distance=2000.5)
    return list(cars.values())


def header(packet_id, frame, session_time):
    h = f1p.PacketHeader()
    h.packet_format = 2025
    h.game_year = 25
    h.game_major_version = 1
    h.game_minor_version = 4
    h.packet_version = 1
    h.packet_id = packet_id
    h.session_uid = SESSION_UID
    h.session_time = session_time
    h.frame_identifier = frame
    h.overall_frame_identifier = frame
    h.player_car_index = PLAYER
    h.secondary_player_car_index = 255
    return h


def split(ms):
    return ms % 60000, ms // 60000


def interval_ms(cars, c):
    """The gap to the car one place ahead (0 for the leader and the retired)."""
    if c["result"] != 2 or c["position"] == 1:
        return 0
    ahead = next(o for o in cars if o["position"] == c["position"] - 1)
    return c["gap_ms"] - ahead["gap_ms"]


def lap_packet(cars, frame, t):
    p = PacketLapData25()
    p.header = header(2, frame, t)
    for c in cars:
        d = p.lap_data[c["index"]]
        d.last_lap_time_in_ms = c["last_ms"]
        d.current_lap_time_in_ms = 40250
        d.sector1_time_ms_part, d.sector1_time_minutes_part = split(c["s1_ms"])
        d.sector2_time_ms_part, d.sector2_time_minutes_part = split(c["s2_ms"])
        d.delta_to_car_in_front_ms_part, d.delta_to_car_in_front_minutes_part = \
            split(interval_ms(cars, c))
        d.delta_to_race_leader_ms_part, d.delta_to_race_leader_minutes_part = split(c["gap_ms"])
        d.lap_distance = c["distance"]
        d.total_distance = 5000.0 * c["lap"]
        d.car_position = c["position"]
        d.current_lap_num = c["lap"]
        d.pit_status = c["pit"]
        d.num_pit_stops = c["stops"]
        d.sector = 0 if c["s1_ms"] == 0 else 1
        d.penalties = c["penalties"]
        d.grid_position = c["index"] + 1
        # 2 in lap while pitting, 4 on track; 0 (garage) for the retired.
        d.driver_status = 0 if c["result"] != 2 else 2 if c["pit"] else 4
        d.result_status = c["result"]
        d.pit_lane_timer_active = 1 if c["pit"] else 0
    return bytes(p.pack())


def names_packet(frame, t):
    p = PacketParticipantsData25()
    p.header = header(4, frame, t)
    p.num_active_cars = CARS
    for i, (name, number, team) in enumerate(GRID):
        d = p.participants[i]
        d.ai_controlled = 0 if i == PLAYER else 1
        d.team_id = team
        d.my_team = 1 if team == 104 else 0
        d.race_number = number
        d.name = name.encode()
        d.show_online_names = 1
    return bytes(p.pack())


def status_packet(cars, frame, t):
    p = PacketCarStatusData25()
    p.header = header(7, frame, t)
    for c in cars:
        d = p.car_status_data[c["index"]]
        d.fuel_in_tank = 60.0
        d.fuel_capacity = 110.0
        d.max_rpm = 13000
        d.max_gears = 8
        d.actual_tyre_compound = {16: 16, 17: 17, 18: 18}[c["compound"]]
        d.visual_tyre_compound = c["compound"]
        d.tyres_age_laps = c["tyre_age"]
    return bytes(p.pack())


def expected(cars, best_ms):
    out = []
    for c in sorted(cars, key=lambda c: c["position"]):
        name, number, team = GRID[c["index"]]
        status = "retired" if c["result"] in (4, 5, 6, 7) else \
            "finished" if c["result"] == 3 else "pitting" if c["pit"] else "running"
        out.append({
            "index": c["index"],
            "position": c["position"],
            "class": None,
            "class_position": c["position"],
            "lap": c["lap"],
            "lap_distance": c["distance"],
            "last_lap": c["last_ms"] / 1000,
            "best_lap": best_ms[c["index"]] / 1000,
            "sector_times": [c["s1_ms"] / 1000 if c["s1_ms"] else None,
                             c["s2_ms"] / 1000 if c["s2_ms"] else None, None],
            "gap_leader": c["gap_ms"] / 1000,
            "interval": interval_ms(cars, c) / 1000,
            # In the pit lane, or in the garage (a retired car's driver status).
            "in_pits": c["pit"] != 0 or c["result"] != 2,
            "pit_stops": c["stops"],
            "penalties_s": c["penalties"],
            "status": status,
            "player": c["index"] == PLAYER,
            "driver": name,
            "team": TEAMS[team],
            "race_number": number,
            "tyre": VISUAL[c["compound"]],
            "tyre_age_laps": c["tyre_age"],
        })
    return {"game": "F1 25", "cars": out}


def main():
    best = {}
    for n, cars in enumerate([tick1(), tick2(), tick3()], start=1):
        assert sorted(c["index"] for c in cars) == list(range(CARS))
        assert sorted(c["position"] for c in cars) == list(range(1, CARS + 1))
        frame, t = 1000 * n, 600.0 + n
        for c in cars:
            best[c["index"]] = min(best.get(c["index"], c["last_ms"]), c["last_ms"])
        (OUT / f"tick{n}-LapData.bin").write_bytes(lap_packet(cars, frame, t))
        (OUT / f"tick{n}-Participants.bin").write_bytes(names_packet(frame, t))
        (OUT / f"tick{n}-CarStatus.bin").write_bytes(status_packet(cars, frame, t))
        (OUT / f"tick{n}-field.json").write_text(json.dumps(expected(cars, best), indent=1) + "\n")
    # f1-packets' own format: 2026, 24 cars.
    p = f1p.PacketLapData()
    p.header = header(2, 1, 1.0)
    p.header.packet_format = 2026
    p.header.game_year = 26
    p.lap_data[0].car_position = 1
    p.lap_data[0].result_status = 2
    (OUT / "2026-LapData.bin").write_bytes(bytes(p.pack()))


if __name__ == "__main__":
    main()
