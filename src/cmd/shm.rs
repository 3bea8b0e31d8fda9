//! `paddock monitor --source acc | ac | iracing | lmu`: the game's shared
//! memory, on the Windows PC it runs on, as a session.
//!
//! These games send nothing over the network: they keep the car in named
//! memory-mapped files that any process on the same PC may open. Each tick
//! (`--hz`) this copies the pages out and hands them to the game's pure decoder
//! (src/sources/acc.rs, iracing_live.rs, lmu.rs) through the loop the UDP sources share
//! (cmd/datagrams.rs): the same session, announcement, endings and progress
//! line. The game may start after the monitor, or quit and start again: a
//! mapping not there yet is looked for again each tick.
//!
//! The game writes while it is read, with no lock to take: each page is
//! copied, then its head is copied again (ACC's `packetId`, iRacing's header
//! with its buffers' `tickCount`, the rF2 plugin's version block for LMU), and
//! the decoder skips (and counts) what changed under the copy. LMU's buffers
//! are copied again at once, up to [`LMU_COPIES`] times a tick: its telemetry
//! is written 50 times a second, and a tick that gave up on it would wait a
//! whole tick for the next. iRacing's car setup, in its session info, goes as
//! the session's setup, and again whenever the driver changes it.
//!
//! Shared memory exists only on Windows: elsewhere the source says so and
//! exits. The part that opens it (`OpenFileMappingW`, `MapViewOfFile`, through
//! the `windows-sys` bindings) is the only Windows code; what reads the pages
//! works on any [`Memory`], so its tests run everywhere on memory of their own.

use std::future::Future;

use super::monitoring::{MonitorArgs, SourceArg};

/// The names ACC and AC give their pages (`SharedFileOut.h`).
#[cfg(any(windows, test))]
const ACC_PHYSICS: &str = "Local\\acpmf_physics";
#[cfg(any(windows, test))]
const ACC_GRAPHICS: &str = "Local\\acpmf_graphics";
#[cfg(any(windows, test))]
const ACC_STATIC: &str = "Local\\acpmf_static";
/// iRacing's (`irsdk_defines.h`, `IRSDK_MEMMAPFILENAME`).
#[cfg(any(windows, test))]
const IRACING: &str = "Local\\IRSDKMemMapFileName";
/// The rF2 shared memory plugin's, in LMU and rFactor 2
/// (`rFactor2SharedMemoryMap.cpp`; the session's namespace, as `Local\`).
#[cfg(any(windows, test))]
const LMU_TELEMETRY: &str = "$rFactor2SMMP_Telemetry$";
#[cfg(any(windows, test))]
const LMU_SCORING: &str = "$rFactor2SMMP_Scoring$";
/// How many times a tick LMU's buffers are copied while the copies come out
/// torn.
#[cfg(any(windows, test))]
const LMU_COPIES: usize = 3;

pub(super) async fn run(
    args: &MonitorArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    #[cfg(windows)]
    {
        let (game, hello) = match args.source {
            SourceArg::Lmu => (
                Shm::lmu(windows::Windows),
                "monitor: reading Le Mans Ultimate's shared memory (the rF2 plugin's \
                 $rFactor2SMMP_Telemetry$ and _Scoring$); in the game turn Settings > Gameplay > \
                 Enable Plugins on (and restart it), then get in the car",
            ),
            SourceArg::Iracing => (
                Shm::iracing(windows::Windows),
                "monitor: reading iRacing's shared memory (Local\\IRSDKMemMapFileName); \
                 get in the car (nothing to set in the sim)",
            ),
            SourceArg::Ac => (
                Shm::acc(windows::Windows, "Assetto Corsa"),
                "monitor: reading Assetto Corsa's shared memory (Local\\acpmf_*); \
                 start a session in the game (nothing to set for shared memory)",
            ),
            _ => (
                Shm::acc(windows::Windows, "Assetto Corsa Competizione"),
                "monitor: reading ACC's shared memory (Local\\acpmf_*); \
                 start a session in the game (nothing to set for shared memory)",
            ),
        };
        super::datagrams::run(args, None, game, None, hello, shutdown).await
    }
    #[cfg(not(windows))]
    {
        drop(shutdown);
        if args.source == SourceArg::Iracing {
            anyhow::bail!(
                "--source iracing reads the sim's shared memory (Local\\IRSDKMemMapFileName), \
                 which exists only on Windows, on the PC iRacing runs on: run paddock.exe \
                 there (it sends to any broker over the network); on Linux, replay a \
                 telemetry file instead: --replay FILE.ibt"
            );
        }
        if args.source == SourceArg::Lmu {
            anyhow::bail!(
                "--source lmu reads Le Mans Ultimate's shared memory (the rF2 plugin's \
                 $rFactor2SMMP_Telemetry$ and $rFactor2SMMP_Scoring$), which exists only on \
                 Windows, on the PC the game runs on: run paddock.exe there (it sends to any \
                 broker over the network)"
            );
        }
        let (flag, game) = match args.source {
            SourceArg::Ac => ("ac", "Assetto Corsa"),
            _ => ("acc", "Assetto Corsa Competizione"),
        };
        anyhow::bail!(
            "--source {flag} reads {game}'s shared memory (Local\\acpmf_physics, _graphics, \
             _static), which exists only on Windows, on the PC the game runs on: run \
             paddock.exe there (it sends to any broker over the network)"
        )
    }
}

/// Named shared memory: Windows' (`windows::Windows`), or a test's own.
#[cfg(any(windows, test))]
pub(super) trait Memory {
    type View: View;
    /// Opens the mapping `name`, `None` while the game has not made it.
    fn open(&self, name: &str) -> Option<Self::View>;
}

/// An open mapping, written by the game while it is read.
#[cfg(any(windows, test))]
pub(super) trait View {
    /// Its length in bytes (at least what the game asked for).
    fn len(&self) -> usize;
    /// Copies its first `into.len()` bytes (no more than [`View::len`]).
    fn copy_to(&self, into: &mut [u8]);
}

/// A game read from shared memory, as the shared loop drives it.
#[cfg(any(windows, test))]
pub(super) struct Shm<M: Memory> {
    memory: M,
    /// The pages, once the game has made them all.
    views: Option<Vec<M::View>>,
    /// The copies, kept between ticks (a page is copied in place).
    copies: Vec<Vec<u8>>,
    game: Game,
}

#[cfg(any(windows, test))]
enum Game {
    Acc(crate::sources::acc::Decoder),
    Iracing(crate::sources::iracing_live::Decoder),
    Lmu(crate::sources::lmu::Decoder),
}

#[cfg(any(windows, test))]
impl<M: Memory> Shm<M> {
    pub(super) fn acc(memory: M, game: &'static str) -> Self {
        Shm {
            memory,
            views: None,
            copies: vec![Vec::new(); 3],
            game: Game::Acc(crate::sources::acc::Decoder::new(game)),
        }
    }

    pub(super) fn iracing(memory: M) -> Self {
        Shm {
            memory,
            views: None,
            copies: vec![Vec::new()],
            game: Game::Iracing(crate::sources::iracing_live::Decoder::new()),
        }
    }

    pub(super) fn lmu(memory: M) -> Self {
        Shm {
            memory,
            views: None,
            copies: vec![Vec::new(); 2],
            game: Game::Lmu(crate::sources::lmu::Decoder::new()),
        }
    }

    fn names(&self) -> &'static [&'static str] {
        match self.game {
            Game::Acc(_) => &[ACC_PHYSICS, ACC_GRAPHICS, ACC_STATIC],
            Game::Iracing(_) => &[IRACING],
            Game::Lmu(_) => &[LMU_TELEMETRY, LMU_SCORING],
        }
    }
}

/// Copies `view` into `copy`, then reads its first `N` bytes again: a page as
/// it was, and what its id is once the copy is done.
#[cfg(any(windows, test))]
fn copy_then_head<const N: usize>(view: &impl View, copy: &mut Vec<u8>) -> [u8; N] {
    copy.resize(view.len(), 0);
    view.copy_to(copy);
    let mut head = [0u8; N];
    if view.len() >= N {
        view.copy_to(&mut head);
    }
    head
}

#[cfg(any(windows, test))]
impl<M: Memory> super::datagrams::Game for Shm<M> {
    /// Nothing arrives as datagrams.
    fn read(&mut self, _: &[u8]) -> bool {
        false
    }

    fn poll(&mut self) -> bool {
        let names = self.names();
        let Shm {
            memory,
            views,
            copies,
            game,
        } = self;
        // The game's pages: opened once all of them are there.
        if views.is_none() {
            *views = names.iter().map(|n| memory.open(n)).collect();
        }
        let Some(views) = views else {
            return false;
        };
        match game {
            Game::Acc(decoder) => {
                let [physics, graphics, statics] = &mut copies[..] else {
                    return false;
                };
                let physics_after = copy_then_head::<4>(&views[0], physics);
                let graphics_after = copy_then_head::<4>(&views[1], graphics);
                copy_then_head::<0>(&views[2], statics);
                decoder.read(crate::sources::acc::Pages {
                    physics,
                    physics_id_after: i32::from_le_bytes(physics_after),
                    graphics,
                    graphics_id_after: i32::from_le_bytes(graphics_after),
                    statics,
                })
            }
            Game::Iracing(decoder) => {
                use crate::sources::iracing_live::HEADER_LEN;
                let (Some(view), Some(map)) = (views.first(), copies.first_mut()) else {
                    return false;
                };
                let header_after = copy_then_head::<HEADER_LEN>(view, map);
                decoder.read(map, &header_after)
            }
            Game::Lmu(decoder) => {
                use crate::sources::lmu::{Buffers, Read, VERSIONS_LEN, Versions};
                let [telemetry, scoring] = &mut copies[..] else {
                    return false;
                };
                for _ in 0..LMU_COPIES {
                    let telemetry_after = copy_then_head::<VERSIONS_LEN>(&views[0], telemetry);
                    let scoring_after = copy_then_head::<VERSIONS_LEN>(&views[1], scoring);
                    let versions =
                        |head: [u8; VERSIONS_LEN]| Versions::of(&head).unwrap_or_default();
                    match decoder.read(Buffers {
                        telemetry,
                        telemetry_after: versions(telemetry_after),
                        scoring,
                        scoring_after: versions(scoring_after),
                    }) {
                        Read::Torn => continue,
                        read => return read == Read::Frame,
                    }
                }
                false
            }
        }
    }

    fn take_setup(&mut self) -> Option<serde_json::Value> {
        match &mut self.game {
            Game::Acc(_) | Game::Lmu(_) => None,
            Game::Iracing(decoder) => decoder.take_setup(),
        }
    }

    fn frame(&self) -> Option<serde_json::Value> {
        match &self.game {
            Game::Acc(decoder) => decoder.frame(),
            Game::Iracing(decoder) => decoder.frame(),
            Game::Lmu(decoder) => decoder.frame(),
        }
    }

    fn progress(&self) -> String {
        let waiting = if self.views.is_none() {
            " (waiting for the game: its shared memory is not there yet)"
        } else {
            ""
        };
        match &self.game {
            Game::Acc(decoder) => {
                let c = decoder.counts();
                format!(
                    "shared memory{waiting}: {} reads made frames, {} unchanged (paused, menus), \
                     {} with no session loaded or a replay, {} torn (written during the copy) and {} \
                     short pages skipped",
                    c.read, c.unchanged, c.off, c.torn, c.short
                )
            }
            Game::Iracing(decoder) => {
                let c = decoder.counts();
                format!(
                    "shared memory{waiting}: {} rows made frames, {} unchanged (no newer row), \
                     {} with the sim not connected (menus), {} torn (written during the copy) \
                     and {} malformed maps skipped",
                    c.read, c.unchanged, c.off, c.torn, c.malformed
                )
            }
            Game::Lmu(decoder) => {
                let c = decoder.counts();
                format!(
                    "shared memory{waiting}: {} reads made frames, {} unchanged (no newer write), \
                     {} with no car of the player's on track (garage screen, menus), {} torn \
                     copies (written during the copy; copied again) and {} short buffers skipped",
                    c.read, c.unchanged, c.off, c.torn, c.short
                )
            }
        }
    }
}

#[cfg(windows)]
mod windows {
    //! Windows' named shared memory, read-only.

    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::Memory::{
        FILE_MAP_READ, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, MapViewOfFile,
        OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    };

    pub(super) struct Windows;

    /// A mapping opened for reading, and its view, until dropped.
    pub(super) struct Mapped {
        handle: HANDLE,
        view: MEMORY_MAPPED_VIEW_ADDRESS,
        len: usize,
    }

    // SAFETY: a handle and a view of this process's are usable from any of
    // its threads; the monitor's task may move between them.
    unsafe impl Send for Mapped {}

    impl super::Memory for Windows {
        type View = Mapped;

        fn open(&self, name: &str) -> Option<Mapped> {
            let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
            // SAFETY: `wide` is NUL-terminated and outlives the call.
            let handle = unsafe { OpenFileMappingW(FILE_MAP_READ, 0, wide.as_ptr()) };
            if handle.is_null() {
                return None;
            }
            // The whole mapping (length 0), read-only.
            // SAFETY: `handle` is the mapping just opened.
            let view = unsafe { MapViewOfFile(handle, FILE_MAP_READ, 0, 0, 0) };
            if view.Value.is_null() {
                // SAFETY: `handle` is ours and closed once.
                unsafe { CloseHandle(handle) };
                return None;
            }
            // The view's length: its region, the mapping's size rounded up
            // to whole pages (the games' structs are shorter than a page).
            // SAFETY: `info` is written by the call, for its size.
            let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
            let got = unsafe {
                VirtualQuery(
                    view.Value,
                    &mut info,
                    std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
                )
            };
            let len = if got == 0 { 0 } else { info.RegionSize };
            Some(Mapped { handle, view, len })
        }
    }

    impl super::View for Mapped {
        fn len(&self) -> usize {
            self.len
        }

        fn copy_to(&self, into: &mut [u8]) {
            let n = into.len().min(self.len);
            // SAFETY: the view is mapped for `len` bytes while `self` lives.
            // The game writes them meanwhile: the copy may be torn, which the
            // decoders check (packetId, tickCount) and never trust.
            unsafe {
                std::ptr::copy_nonoverlapping(self.view.Value as *const u8, into.as_mut_ptr(), n)
            }
        }
    }

    impl Drop for Mapped {
        fn drop(&mut self) {
            // SAFETY: the view and handle are ours, released once.
            unsafe {
                UnmapViewOfFile(self.view);
                CloseHandle(self.handle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::rc::Rc;

    use super::super::datagrams::Game as _;
    use super::*;

    /// A page by name, with its bytes.
    type Page = (&'static str, Vec<u8>);

    /// Memory of the test's own: pages by name, and a write the "game" makes
    /// in the middle of the next copy of a page (to tear it).
    #[derive(Clone, Default)]
    struct Fake {
        pages: Rc<RefCell<HashMap<&'static str, Vec<u8>>>>,
        tear: Rc<RefCell<Option<Page>>>,
    }

    struct FakeView {
        name: &'static str,
        memory: Fake,
        copies: Cell<u32>,
    }

    impl Memory for Fake {
        type View = FakeView;
        fn open(&self, name: &str) -> Option<FakeView> {
            let name = *self.pages.borrow().get_key_value(name)?.0;
            Some(FakeView {
                name,
                memory: self.clone(),
                copies: Cell::new(0),
            })
        }
    }

    impl View for FakeView {
        fn len(&self) -> usize {
            self.memory.pages.borrow()[self.name].len()
        }
        fn copy_to(&self, into: &mut [u8]) {
            self.copies.set(self.copies.get() + 1);
            let n = into.len();
            into.copy_from_slice(&self.memory.pages.borrow()[self.name][..n]);
            // The game writes the page once this copy is done.
            let tear = self.memory.tear.borrow_mut().take();
            match tear {
                Some((name, page)) if name == self.name => {
                    self.memory.pages.borrow_mut().insert(name, page);
                }
                other => *self.memory.tear.borrow_mut() = other,
            }
        }
    }

    fn acc_pages(physics_id: i32) -> [(&'static str, Vec<u8>); 3] {
        let (p, g, s) = crate::sources::acc::build::pages(physics_id, 1);
        [(ACC_PHYSICS, p), (ACC_GRAPHICS, g), (ACC_STATIC, s)]
    }

    #[test]
    fn pages_are_read_once_the_game_has_made_them_all() {
        let memory = Fake::default();
        let mut shm = Shm::acc(memory.clone(), "Assetto Corsa Competizione");
        assert!(!shm.poll(), "no game yet");
        assert!(shm.progress().contains("waiting for the game"));
        let [physics, graphics, statics] = acc_pages(10);
        memory.pages.borrow_mut().extend([physics, graphics]);
        assert!(!shm.poll(), "no static page yet");
        memory.pages.borrow_mut().extend([statics]);
        assert!(shm.poll());
        let frame = shm.frame().unwrap();
        assert_eq!(
            (&frame["gear"], &frame["lap"]),
            (&serde_json::json!(3), &serde_json::json!(4))
        );
        assert!(!shm.poll(), "the same step again: unchanged");
        assert!(
            shm.progress()
                .starts_with("shared memory: 1 reads made frames, 1 unchanged")
        );
    }

    #[test]
    fn a_page_written_during_its_copy_is_skipped() {
        let memory = Fake::default();
        memory.pages.borrow_mut().extend(acc_pages(10));
        let mut shm = Shm::acc(memory.clone(), "Assetto Corsa");
        // The next physics step lands while the physics page is copied.
        let [(name, next), ..] = acc_pages(11);
        *memory.tear.borrow_mut() = Some((name, next));
        assert!(!shm.poll());
        assert!(shm.progress().contains("1 torn"), "{}", shm.progress());
        // The next tick copies the new step whole.
        assert!(shm.poll());
    }

    #[test]
    fn lmu_copies_a_torn_buffer_again_in_the_same_tick() {
        use crate::sources::lmu::build::race;
        let memory = Fake::default();
        let mut shm = Shm::lmu(memory.clone());
        let (telemetry, scoring) = race(10, 2);
        memory.pages.borrow_mut().insert(LMU_TELEMETRY, telemetry);
        assert!(!shm.poll(), "no scoring buffer yet");
        assert!(shm.progress().contains("waiting for the game"));
        memory.pages.borrow_mut().insert(LMU_SCORING, scoring);
        // The plugin's next telemetry write lands during the first copy.
        let (next, _) = race(11, 2);
        *memory.tear.borrow_mut() = Some((LMU_TELEMETRY, next));
        assert!(shm.poll(), "copied again, whole, in the same tick");
        let frame = shm.frame().unwrap();
        assert_eq!(
            (&frame["game"], &frame["lap"]),
            (
                &serde_json::json!("Le Mans Ultimate"),
                &serde_json::json!(5)
            )
        );
        assert!(!shm.poll(), "no newer write");
        assert!(
            shm.progress().starts_with(
                "shared memory: 1 reads made frames, 1 unchanged (no newer write), 0 with no car \
                 of the player's on track (garage screen, menus), 1 torn"
            ),
            "{}",
            shm.progress()
        );
        assert_eq!(shm.take_setup(), None);
    }

    #[test]
    fn iracing_rows_and_the_setup_come_from_its_one_map() {
        let memory = Fake::default();
        let mut shm = Shm::iracing(memory.clone());
        assert!(!shm.poll(), "no sim yet");
        let map = crate::sources::iracing_live::build::race();
        memory.pages.borrow_mut().insert(IRACING, map.clone());
        // The newest buffer (1) gets a new row under the first copy.
        let mut next = map.clone();
        next[64..68].copy_from_slice(&400i32.to_le_bytes());
        *memory.tear.borrow_mut() = Some((IRACING, next));
        assert!(!shm.poll());
        assert!(shm.progress().contains("1 torn"), "{}", shm.progress());
        assert!(shm.poll());
        assert_eq!(shm.frame().unwrap()["lap_distance"], 1523.5);
        assert_eq!(shm.take_setup().unwrap()["UpdateCount"], 3);
        assert_eq!(shm.take_setup(), None);
        assert!(!shm.poll(), "no newer row");
    }
}
