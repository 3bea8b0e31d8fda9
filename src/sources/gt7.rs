//! Gran Turismo 7's "Simulator Interface" UDP telemetry: encrypted packets in,
//! the player's car as schema frames out.
//!
//! Polyphony publishes no spec; this follows the public readers, facts only:
//! github.com/Nenkai/PDTools (`PDTools.SimulatorInterface/SimulatorPacket.cs`,
//! `PDTools.Crypto/SimulationInterface/SimulatorInterfaceCryptorGT7.cs`: the
//! layout, the cipher, the ports), github.com/drowhunter/GameLink-Plugins
//! (`GT7Plugin`: the heartbeats "B" and "~", their lengths and xor constants),
//! github.com/snipem/gt7dashboard and github.com/Bornhall/gt7telemetry (gear 0
//! as reverse, the field readings).
//!
//! The console sends to whoever sent it a heartbeat on its port 33739 in the
//! last ~10 s (`paddock monitor --source gt7` does; src/cmd/gt7.rs), from its
//! port to the sender's 33740, 60 packets a second. The heartbeat's one byte
//! chooses the format:
//!
//! | heartbeat | bytes | nonce xor | adds |
//! |---|---|---|---|
//! | `A` | 296 | `0xDEADBEAF` | |
//! | `B` | 316 | `0xDEADBEEF` | wheel rotation (rad), sway, heave, surge |
//! | `~` | 344 | `0x55FABB4F` | more, unnamed (energy recovery, …) |
//!
//! Every packet is Salsa20 (20 rounds) encrypted whole with the key
//! [`KEY`] and an 8-byte nonce from the packet itself: `iv1`, the `u32` at
//! 0x40 (sent in the clear), then nonce = `iv1 ^ xor` (LE) ‖ `iv1` (LE). The
//! plaintext starts with the magic `0x47375330` ("0S7G" read little-endian);
//! little-endian throughout. The fields read:
//!
//! | offset | field |
//! |---|---|
//! | 0x3C | `f32` engine rpm |
//! | 0x44 | `f32` fuel (L), 0x48 `f32` tank (L; 100 for most cars, 0 electric) |
//! | 0x4C | `f32` speed (m/s) |
//! | 0x60 | `f32` ×4 tyre surface temperature FL FR RL RR (°C) |
//! | 0x74 | `i16` lap, 0x76 `i16` laps in the race (0: not a race of laps) |
//! | 0x78 | `i32` best lap, 0x7C `i32` last lap (ms; -1 none) |
//! | 0x84 | `i16` grid position (-1 once the race has started) |
//! | 0x8E | `i16` flags: 1 car on track, 2 paused, 4 loading |
//! | 0x90 | `u8` gear (low 4 bits; 0 reverse), 0x91 `u8` throttle, 0x92 `u8` brake (0–255) |
//! | 0x124 | `i32` car code |
//! | 0x128 | `f32` wheel rotation (rad; formats B and ~) |
//!
//! What GT7 does not send, paddock cannot show: the race position once the
//! race is on, the running lap's time, the distance along the lap, tyre wear
//! and pressures, and the pit lane. Its water and oil temperatures are
//! constants (85, 110) and are left out.
//!
//! A new race (what `paddock monitor --new-session-per-race` starts a new
//! session for) is told by the packets alone: the car code changes (another
//! car), or the lap count falls back to 0 or 1 from a later lap (the race
//! restarted, or the next one began). Menus and loading in between are off
//! track and change neither.
//!
//! Nothing here trusts a packet: a length no format has, or a packet that does
//! not decrypt to the magic, is counted and dropped; packets while the car is
//! off track, paused or loading are counted and are not frames; no value read
//! can panic.

use salsa20::Salsa20;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use serde_json::{Map, Value, json};

use super::{Le, corners, put, rounded};

/// The Salsa20 key: the first 32 bytes of "Simulator Interface Packet GT7 ver 0.0".
pub const KEY: &[u8; 32] = b"Simulator Interface Packet GT7 v";
/// The magic the plaintext starts with ("G7S0" written little-endian).
pub const MAGIC: u32 = 0x4737_5330;
/// The console's port for heartbeats.
pub const CONSOLE_PORT: u16 = 33739;
/// The port the console sends packets to, on the heartbeat's sender.
pub const LISTEN_PORT: u16 = 33740;
/// Where the cleartext nonce seed lies in a packet.
const IV_AT: usize = 0x40;

/// A packet format, chosen by the heartbeat and told apart by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Heartbeat "A": 296 bytes, every GT7 version.
    A,
    /// Heartbeat "B": 316 bytes (newer GT7 versions), with the wheel's rotation.
    B,
    /// Heartbeat "~": 344 bytes (newer still).
    Tilde,
}

impl Format {
    pub fn of(len: usize) -> Option<Self> {
        match len {
            296 => Some(Format::A),
            316 => Some(Format::B),
            344 => Some(Format::Tilde),
            _ => None,
        }
    }

    pub fn length(self) -> usize {
        match self {
            Format::A => 296,
            Format::B => 316,
            Format::Tilde => 344,
        }
    }

    /// The heartbeat's one byte that asks the console for this format.
    pub fn heartbeat(self) -> u8 {
        match self {
            Format::A => b'A',
            Format::B => b'B',
            Format::Tilde => b'~',
        }
    }

    /// What the nonce's first half is `iv1` xored with.
    pub fn xor(self) -> u32 {
        match self {
            Format::A => 0xDEAD_BEAF,
            Format::B => 0xDEAD_BEEF,
            Format::Tilde => 0x55FA_BB4F,
        }
    }
}

/// The nonce of a packet whose cleartext seed is `iv1`.
pub fn nonce(iv1: u32, format: Format) -> [u8; 8] {
    let mut nonce = [0u8; 8];
    nonce[..4].copy_from_slice(&(iv1 ^ format.xor()).to_le_bytes());
    nonce[4..].copy_from_slice(&iv1.to_le_bytes());
    nonce
}

/// Encrypts a plaintext packet as the console does: the keystream over the
/// whole packet, then the seed `iv1` in the clear at 0x40. For stand-in
/// consoles and the fuzzer (fuzz/fuzz_targets/gt7.rs), which feed the decoder
/// plaintexts of their choosing.
pub fn encrypt(plain: &[u8], iv1: u32, format: Format) -> Vec<u8> {
    let mut packet = plain.to_vec();
    let mut cipher = Salsa20::new(KEY.into(), &nonce(iv1, format).into());
    cipher.apply_keystream(&mut packet);
    if let Some(seed) = packet.get_mut(IV_AT..IV_AT + 4) {
        seed.copy_from_slice(&iv1.to_le_bytes());
    }
    packet
}

/// Why a datagram was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// A length none of the formats has.
    Length,
    /// Decrypted, not to the magic: not GT7's, or of another key.
    Magic,
}

/// Decrypts a packet: the plaintext, or why not. Pure (a Salsa20 keystream
/// over a copy).
pub fn decrypt(packet: &[u8]) -> Result<(Format, Vec<u8>), Reject> {
    let format = Format::of(packet.len()).ok_or(Reject::Length)?;
    let seed: [u8; 4] = packet
        .get(IV_AT..IV_AT + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or(Reject::Length)?;
    let mut plain = packet.to_vec();
    let mut cipher = Salsa20::new(KEY.into(), &nonce(u32::from_le_bytes(seed), format).into());
    cipher.apply_keystream(&mut plain);
    if Le(&plain).u32(0) != Some(MAGIC) {
        return Err(Reject::Magic);
    }
    Ok((format, plain))
}

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Packets read into the car's frame.
    pub read: u64,
    /// Well-formed packets while the car is not driving: not on track (menus,
    /// replays' lobbies), paused, or loading. Not frames.
    pub off_track: u64,
    /// Of the right length but not decrypting to GT7's magic.
    pub wrong_magic: u64,
    /// Of a length no format has (not GT7, or cut short).
    pub malformed: u64,
}

impl Counts {
    /// Packets dropped as not readable.
    pub fn rejected(&self) -> u64 {
        self.wrong_magic + self.malformed
    }
}

/// The player's car as the console last described it.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: Counts,
    format: Option<Format>,
    frame: Map<String, Value>,
    /// The car code and lap of the last packet read on track, to see a new
    /// race begin.
    last: Option<(i32, i16)>,
    /// Why the packets say a new race began, until the monitor takes it.
    new_race: Option<&'static str>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The format of the last packet read, if any.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Reads one encrypted UDP datagram; true when the car's frame changed.
    pub fn read(&mut self, packet: &[u8]) -> bool {
        let (format, plain) = match decrypt(packet) {
            Ok(read) => read,
            Err(Reject::Length) => {
                self.counts.malformed += 1;
                return false;
            }
            Err(Reject::Magic) => {
                self.counts.wrong_magic += 1;
                return false;
            }
        };
        match self.read_plain(format, &plain) {
            Some(frame) => {
                self.counts.read += 1;
                self.format = Some(format);
                self.frame = frame;
                self.follow_races(&plain);
                true
            }
            None => {
                self.counts.off_track += 1;
                false
            }
        }
    }

    /// A decrypted packet's frame; `None` while the car is not driving.
    fn read_plain(&self, format: Format, plain: &[u8]) -> Option<Map<String, Value>> {
        let p = Le(plain);
        let flags = p.u16(0x8E)?;
        let (on_track, paused, loading) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        if !on_track || paused || loading {
            return None;
        }
        let mut m = Map::new();
        m.insert("game".into(), json!("Gran Turismo 7"));
        put(&mut m, "rpm", p.f32(0x3C).map(|r| rounded(r, 0)));
        // An electric car's tank is 0: its "fuel" is not litres of anything.
        let capacity = p.f32(0x48).filter(|c| c.is_finite() && *c > 0.0);
        if let Some(capacity) = capacity {
            let level = p.f32(0x44).filter(|l| l.is_finite());
            put(&mut m, "fuel", level.map(|l| rounded(l.max(0.0), 2)));
            m.insert("fuel_capacity".into(), rounded(capacity, 1));
            put(
                &mut m,
                "fuel_pct",
                level.map(|l| rounded((l / capacity).clamp(0.0, 1.0), 4)),
            );
        }
        put(
            &mut m,
            "speed",
            p.f32(0x4C).map(|s| rounded(s.abs() * 3.6, 1)),
        );
        let temp = |at: usize| p.f32(at).map_or(Value::Null, |t| rounded(t, 1));
        m.insert(
            "tire_temps".into(),
            corners(temp(0x60), temp(0x64), temp(0x68), temp(0x6C)),
        );
        let lap = p.i16(0x74).filter(|l| *l >= 0);
        let total = p.i16(0x76).filter(|l| *l > 0);
        put(&mut m, "lap", lap.map(|l| json!(l)));
        put(&mut m, "total_laps", total.map(|l| json!(l)));
        // Race laps left, the lap being driven included (as F1's): what the
        // strategy's fuel to the finish multiplies.
        if let (Some(lap), Some(total)) = (lap, total)
            && lap > 0
        {
            let left = (i32::from(total) + 1 - i32::from(lap)).max(0);
            m.insert("laps_left".into(), json!(left));
        }
        let time = |at: usize| match p.i32(at) {
            Some(ms) if ms > 0 => rounded(f64::from(ms) / 1000.0, 3),
            _ => Value::Null,
        };
        m.insert("best_lap_time".into(), time(0x78));
        m.insert("last_lap_time".into(), time(0x7C));
        put(
            &mut m,
            "grid_position",
            p.i16(0x84).filter(|g| *g > 0).map(|g| json!(g)),
        );
        let gear = p.u8(0x90).map(|g| g & 0x0F);
        put(
            &mut m,
            "gear",
            gear.map(|g| json!(if g == 0 { -1 } else { i16::from(g) })),
        );
        let pedal = |b: u8| rounded(f64::from(b) / 255.0, 3);
        put(&mut m, "throttle", p.u8(0x91).map(pedal));
        put(&mut m, "brake", p.u8(0x92).map(pedal));
        put(&mut m, "car_code", p.i32(0x124).map(|c| json!(c)));
        if format != Format::A {
            // The steering wheel's angle, not the schema's -1…1 `steering`:
            // the car's lock is not in the packet.
            put(
                &mut m,
                "steering_angle_deg",
                p.f32(0x128).map(|r| rounded(r.to_degrees(), 1)),
            );
        }
        Some(m)
    }

    /// The car's frame: `None` until a packet with the car on track was read.
    pub fn frame(&self) -> Option<Value> {
        (!self.frame.is_empty()).then(|| Value::Object(self.frame.clone()))
    }

    /// Sees a new race begin in a packet read on track: another car, or the
    /// lap count back to 0 or 1 from a later lap.
    fn follow_races(&mut self, plain: &[u8]) {
        let p = Le(plain);
        let (Some(car), Some(lap)) = (p.i32(0x124), p.i16(0x74)) else {
            return;
        };
        if let Some((car_before, lap_before)) = self.last {
            if car != car_before && car != 0 && car_before != 0 {
                self.new_race = Some("another car");
            } else if lap < lap_before && lap <= 1 {
                self.new_race = Some("the lap count back to the start");
            }
        }
        self.last = Some((car, lap));
    }

    /// Why a new race began since the last call, once: the packet just read
    /// is the new race's first.
    pub fn take_new_race(&mut self) -> Option<&'static str> {
        self.new_race.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext packet of `format` built from the readers' layout: each
    /// field at its offset, every corner distinct, the car on track.
    fn plain(format: Format) -> Vec<u8> {
        let mut p = vec![0u8; format.length()];
        let f32_ = |p: &mut Vec<u8>, at: usize, v: f32| {
            p[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        p[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        f32_(&mut p, 0x3C, 6543.2);
        f32_(&mut p, 0x44, 42.5);
        f32_(&mut p, 0x48, 100.0);
        f32_(&mut p, 0x4C, 62.5); // 225 km/h
        for (i, t) in [81.0f32, 82.0, 73.5, 74.5].iter().enumerate() {
            f32_(&mut p, 0x60 + 4 * i, *t);
        }
        p[0x74..0x76].copy_from_slice(&3i16.to_le_bytes());
        p[0x76..0x78].copy_from_slice(&10i16.to_le_bytes());
        p[0x78..0x7C].copy_from_slice(&101_234i32.to_le_bytes());
        p[0x7C..0x80].copy_from_slice(&102_500i32.to_le_bytes());
        p[0x84..0x86].copy_from_slice(&(-1i16).to_le_bytes());
        p[0x8E..0x90].copy_from_slice(&(1u16 | 8).to_le_bytes()); // on track, in gear
        p[0x90] = 0xF4; // 4th, no suggestion
        p[0x91] = 255;
        p[0x92] = 102;
        p[0x124..0x128].copy_from_slice(&3383i32.to_le_bytes());
        if format != Format::A {
            f32_(&mut p, 0x128, -std::f32::consts::FRAC_PI_2);
        }
        p
    }

    /// Encrypts as the console does, with the salsa20 crate directly (not
    /// through [`super::encrypt`], so a slip there shows here): the keystream
    /// over the whole plaintext, then the seed in the clear at 0x40.
    fn encrypt(mut plain: Vec<u8>, iv1: u32, format: Format) -> Vec<u8> {
        let mut cipher = Salsa20::new(KEY.into(), &nonce(iv1, format).into());
        cipher.apply_keystream(&mut plain);
        plain[IV_AT..IV_AT + 4].copy_from_slice(&iv1.to_le_bytes());
        plain
    }

    #[test]
    fn the_nonce_is_the_seed_xored_then_the_seed() {
        assert_eq!(
            nonce(0x0102_0304, Format::A),
            [
                0x04 ^ 0xAF,
                0x03 ^ 0xBE,
                0x02 ^ 0xAD,
                0x01 ^ 0xDE,
                4,
                3,
                2,
                1
            ]
        );
        assert_eq!(KEY.len(), 32);
        assert!(b"Simulator Interface Packet GT7 ver 0.0".starts_with(KEY));
    }

    #[test]
    fn every_format_decrypts_and_reads_into_the_schema() {
        for (format, iv1) in [
            (Format::A, 0x1234_5678),
            (Format::B, 0xCAFE_F00D),
            (Format::Tilde, 7),
        ] {
            let mut d = Decoder::new();
            assert!(d.read(&encrypt(plain(format), iv1, format)), "{format:?}");
            assert_eq!(d.format(), Some(format));
            let f = d.frame().unwrap();
            let mut want = json!({
                "game": "Gran Turismo 7", "rpm": 6543.0, "fuel": 42.5,
                "fuel_capacity": 100.0, "fuel_pct": 0.425, "speed": 225.0,
                "tire_temps": {"fl": 81.0, "fr": 82.0, "rl": 73.5, "rr": 74.5},
                "lap": 3, "total_laps": 10, "laps_left": 8,
                "best_lap_time": 101.234, "last_lap_time": 102.5,
                "gear": 4, "throttle": 1.0, "brake": 0.4, "car_code": 3383,
            });
            if format != Format::A {
                want["steering_angle_deg"] = json!(-90.0);
            }
            assert_eq!(f, want, "{format:?}");
            crate::protocol::payload::validate_object(f.to_string().as_bytes(), 64 * 1024).unwrap();
        }
    }

    #[test]
    fn before_the_start_the_grid_position_and_no_laps_show() {
        let mut p = plain(Format::A);
        p[0x74..0x76].copy_from_slice(&0i16.to_le_bytes());
        p[0x78..0x7C].copy_from_slice(&(-1i32).to_le_bytes());
        p[0x7C..0x80].copy_from_slice(&(-1i32).to_le_bytes());
        p[0x84..0x86].copy_from_slice(&6i16.to_le_bytes());
        p[0x90] = 0xF0; // reverse
        p[0x48..0x4C].copy_from_slice(&0f32.to_le_bytes()); // electric
        let mut d = Decoder::new();
        assert!(d.read(&encrypt(p, 99, Format::A)));
        let f = d.frame().unwrap();
        assert_eq!(f["grid_position"], 6);
        assert_eq!(f["gear"], -1);
        assert_eq!(
            (&f["best_lap_time"], &f["last_lap_time"]),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(f.get("laps_left"), None);
        assert_eq!(f.get("fuel"), None, "an electric car has no litres");
    }

    #[test]
    fn a_new_race_is_another_car_or_the_lap_count_back_at_the_start() {
        let packet = |lap: i16, car: i32, on_track: bool| {
            let mut p = plain(Format::B);
            p[0x74..0x76].copy_from_slice(&lap.to_le_bytes());
            p[0x124..0x128].copy_from_slice(&car.to_le_bytes());
            if !on_track {
                p[0x8E..0x90].copy_from_slice(&4u16.to_le_bytes()); // loading
            }
            encrypt(p, 5, Format::B)
        };
        let mut d = Decoder::new();
        // Laps go on: no new race, the first packet included.
        for lap in [0, 1, 2, 3] {
            assert!(d.read(&packet(lap, 3383, true)));
            assert_eq!(d.take_new_race(), None, "lap {lap}");
        }
        // Menus and loading between races change nothing; the next race's
        // first lap on track is a new race.
        assert!(!d.read(&packet(0, 0, false)));
        assert_eq!(d.take_new_race(), None);
        assert!(d.read(&packet(1, 3383, true)));
        assert_eq!(d.take_new_race(), Some("the lap count back to the start"));
        assert_eq!(d.take_new_race(), None, "said once");
        // A restart during lap 1 (back to 0 on the grid) is one too.
        assert!(d.read(&packet(0, 3383, true)));
        assert_eq!(d.take_new_race(), Some("the lap count back to the start"));
        assert!(d.read(&packet(1, 3383, true)));
        assert_eq!(d.take_new_race(), None, "the start of the race itself");
        // Another car, whatever its lap.
        assert!(d.read(&packet(1, 1234, true)));
        assert_eq!(d.take_new_race(), Some("another car"));
        // Lap 3 to 2 is not a new race (no real race does it, but it is no start).
        assert!(d.read(&packet(3, 1234, true)) && d.read(&packet(2, 1234, true)));
        assert_eq!(d.take_new_race(), None);
    }

    /// The fuzzer's seeds (.ci/run copies them into its corpus): each
    /// format's plaintext (what the fuzz target encrypts itself) and the
    /// packet encrypted, held to this builder; `PADDOCK_WRITE_FIXTURES=1`
    /// rewrites them after a change to it.
    #[test]
    fn the_fuzz_seeds_are_the_builders_packets() {
        let dir = format!("{}/tests/data/gt7", env!("CARGO_MANIFEST_DIR"));
        for (name, format) in [("a", Format::A), ("b", Format::B), ("tilde", Format::Tilde)] {
            for (kind, built) in [
                ("plain", plain(format)),
                ("packet", encrypt(plain(format), 0x0BAD_CAFE, format)),
            ] {
                let path = format!("{dir}/{name}.{kind}.bin");
                if std::env::var_os("PADDOCK_WRITE_FIXTURES").is_some() {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, &built).unwrap();
                }
                assert_eq!(std::fs::read(&path).unwrap(), built, "{path}");
            }
        }
    }

    #[test]
    fn garbage_wrong_keys_and_menus_are_counted_never_read() {
        let mut d = Decoder::new();
        let good = encrypt(plain(Format::B), 5, Format::B);
        assert!(!d.read(&[]));
        d.read(&good[..300]);
        d.read(b"hello, this is not a game");
        // Right length, never encrypted: the magic is not there.
        d.read(&vec![0u8; 296]);
        // A's length encrypted with B's constant: another nonce, no magic.
        d.read(&encrypt(plain(Format::A), 5, Format::B));
        // The plaintext itself: decrypting it scrambles the magic.
        d.read(&plain(Format::A));
        let mut paused = plain(Format::A);
        paused[0x8E..0x90].copy_from_slice(&3u16.to_le_bytes());
        d.read(&encrypt(paused, 1, Format::A));
        let mut menus = plain(Format::A);
        menus[0x8E..0x90].copy_from_slice(&0u16.to_le_bytes());
        d.read(&encrypt(menus, 1, Format::A));
        assert_eq!(
            d.counts(),
            Counts {
                read: 0,
                off_track: 2,
                wrong_magic: 3,
                malformed: 3
            }
        );
        assert_eq!(d.frame(), None);
        assert!(d.read(&good));
        assert_eq!(d.frame().unwrap()["speed"], 225.0);
        // Any plaintext that carries the magic reads without panic.
        let mut wild = vec![0xff; 344];
        wild[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        wild[0x8E..0x90].copy_from_slice(&1u16.to_le_bytes());
        assert!(d.read(&encrypt(wild, 3, Format::Tilde)));
        serde_json::to_vec(&d.frame().unwrap()).unwrap();
    }
}
