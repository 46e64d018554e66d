//! A simulated disk for durability tests: [`SimStorage`].
//!
//! It keeps, for every file, the bytes written (what a read returns: the
//! page cache) apart from the bytes synced (what is on the platter), and
//! for the names in a directory the current set apart from the set as of
//! the directory's last sync. [`SimStorage::power_cut`] throws away what
//! was not synced, the way RocksDB's `FaultInjectionTestFS` and SQLite's
//! test VFS do; [`PowerCut::Torn`] is harsher and keeps a random part of
//! it (a prefix of the unsynced name changes, in order, and of each file's
//! unsynced appended bytes, sometimes followed by zeros: the size reached
//! the disk before the data). [`SimStorage::cut_at_op`] arms a cut at the
//! n-th mutating call so a test can crash a journal at every point of a
//! workload — inside an append, between a segment's creation and its
//! directory sync, in the middle of a compaction.
//!
//! Faults: a capacity (writes past it fail with `ENOSPC` after writing
//! what fits, as a full file system does), failing appends, failing fsyncs
//! (the data stays unsynced).
//!
//! What it does not model: reordering of unsynced name changes (a prefix
//! survives, as on a file system with an ordered metadata journal such as
//! ext4), and Linux's dropping of the pages whose writeback failed (the
//! journal poisons itself at the first failed fsync and never trusts a
//! retry, so the difference is not exercised).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{DataSync, Storage, StorageFile};

/// What survives a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// Exactly what was synced.
    DropUnsynced,
    /// What was synced, plus a random (seeded, reproducible) part of what
    /// was not: see the module docs.
    Torn {
        /// Seed of the choices.
        seed: u64,
    },
}

/// Faults the disk injects until they are changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Bytes the disk holds (the sum of every named file's length); an
    /// append past it writes what fits and fails with `ENOSPC`, a create
    /// when it is reached fails with `ENOSPC`.
    pub capacity: Option<u64>,
    /// Every append fails with `EIO`, writing nothing.
    pub fail_writes: bool,
    /// Every fsync (file or directory) fails with `EIO`; nothing it
    /// covered becomes durable.
    pub fail_syncs: bool,
}

/// Counters of what the disk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Mutating calls made (create, append, sync, truncate, remove).
    pub ops: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Unsynced bytes thrown away by power cuts.
    pub bytes_dropped: u64,
    /// Calls that failed because of an injected fault.
    pub faults_injected: u64,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Clone)]
enum NameOp {
    Create(PathBuf, u64),
    Remove(PathBuf),
}

#[derive(Debug, Default)]
struct SimState {
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    /// Name changes since their directory's last sync, in order.
    pending: Vec<NameOp>,
    inodes: HashMap<u64, Inode>,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    /// Bumped by every power cut: handles from before it are dead.
    generation: u64,
    faults: Faults,
    armed: Option<(u64, PowerCut)>,
    /// Set by an armed cut: every call fails until [`SimStorage::restart`].
    down: bool,
    stats: SimStats,
}

/// The simulated disk. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

fn injected(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("simulated {what}"))
}

fn no_space() -> io::Error {
    // ENOSPC, as the kernel reports it.
    io::Error::from_raw_os_error(28)
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error ({what})"))
}

impl SimState {
    /// Counts a mutating call; fires an armed cut (the call then fails).
    fn op(&mut self) -> io::Result<()> {
        if self.down {
            return Err(injected(io::ErrorKind::BrokenPipe, "power loss: the disk is gone until restart"));
        }
        self.stats.ops += 1;
        if let Some((at, how)) = self.armed
            && self.stats.ops >= at
        {
            self.armed = None;
            self.cut(how);
            self.down = true;
            return Err(injected(io::ErrorKind::BrokenPipe, "power loss"));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.names.values().filter_map(|i| self.inodes.get(i)).map(|n| n.data.len() as u64).sum()
    }

    fn apply(names: &mut BTreeMap<PathBuf, u64>, op: &NameOp) {
        match op {
            NameOp::Create(path, inode) => {
                names.insert(path.clone(), *inode);
            }
            NameOp::Remove(path) => {
                names.remove(path);
            }
        }
    }

    fn cut(&mut self, how: PowerCut) {
        let mut rng = match how {
            PowerCut::DropUnsynced => None,
            PowerCut::Torn { seed } => Some(SplitMix(seed ^ self.stats.ops.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
        };
        let kept_ops = rng.as_mut().map_or(0, |r| r.below(self.pending.len() as u64 + 1) as usize);
        let mut names = self.durable_names.clone();
        for op in &self.pending[..kept_ops] {
            Self::apply(&mut names, op);
        }
        let live: BTreeSet<u64> = names.values().copied().collect();
        let named_before: BTreeSet<u64> = self.names.values().copied().collect();
        let mut dropped = 0u64;
        for (id, inode) in &mut self.inodes {
            // Only bytes a read could return before the cut count as lost.
            let before = if named_before.contains(id) { inode.data.len() as u64 } else { 0 };
            if !live.contains(id) {
                dropped += before;
                inode.data.clear();
                inode.durable.clear();
                continue;
            }
            let survived = if inode.data.starts_with(&inode.durable) {
                let tail = inode.data.len() - inode.durable.len();
                let mut kept = inode.durable.clone();
                if let Some(r) = rng.as_mut() {
                    let k = r.below(tail as u64 + 1) as usize;
                    kept.extend_from_slice(&inode.data[inode.durable.len()..inode.durable.len() + k]);
                    if k < tail && r.below(4) == 0 {
                        let zeros = r.below((tail - k) as u64 + 1) as usize;
                        kept.resize(kept.len() + zeros, 0);
                    }
                }
                kept
            } else if rng.as_mut().is_some_and(|r| r.below(2) == 0) {
                // Cut since the last sync: either the old or the new length.
                inode.data.clone()
            } else {
                inode.durable.clone()
            };
            dropped += before.saturating_sub(survived.len() as u64);
            inode.data = survived.clone();
            inode.durable = survived;
        }
        self.names = names.clone();
        self.durable_names = names;
        self.pending.clear();
        self.generation += 1;
        self.stats.power_cuts += 1;
        self.stats.bytes_dropped += dropped;
    }

    fn check_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if self.dirs.contains(dir) => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such directory", path.display()))),
        }
    }
}

impl SimStorage {
    /// An empty disk with no faults.
    pub fn new() -> Self {
        SimStorage::default()
    }

    /// The same disk behind the storage trait object the journal takes.
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }

    /// Sets the faults injected from now on.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        lock(&self.state).faults
    }

    /// Cuts the power now: see [`PowerCut`]. Open files die with it.
    pub fn power_cut(&self, how: PowerCut) {
        lock(&self.state).cut(how);
    }

    /// Arms a power cut at the `op`-th mutating call from the disk's
    /// creation (counted in [`SimStats::ops`]): that call fails, and so
    /// does every later one until [`SimStorage::restart`].
    pub fn cut_at_op(&self, op: u64, how: PowerCut) {
        lock(&self.state).armed = Some((op, how));
    }

    /// Whether an armed cut has fired (and the disk is down).
    pub fn is_down(&self) -> bool {
        lock(&self.state).down
    }

    /// Brings the disk back after an armed cut (the "reboot"), disarming
    /// any cut that did not fire.
    pub fn restart(&self) {
        let mut st = lock(&self.state);
        st.down = false;
        st.armed = None;
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        lock(&self.state).stats
    }

    /// Bytes in named files now.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.state).used()
    }

    /// The current bytes of `path` (a test's direct look at the disk).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        st.names.get(path).and_then(|i| st.inodes.get(i)).map(|n| n.data.clone())
    }

    /// Overwrites `path` (creating it, durably) — a test's hand on the disk.
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        let mut st = lock(&self.state);
        let id = match st.names.get(path) {
            Some(id) => *id,
            None => {
                st.next_inode += 1;
                let id = st.next_inode;
                st.names.insert(path.to_owned(), id);
                st.durable_names.insert(path.to_owned(), id);
                id
            }
        };
        let inode = st.inodes.entry(id).or_default();
        inode.data = bytes.to_vec();
        inode.durable = bytes.to_vec();
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.down {
            return Err(injected(io::ErrorKind::BrokenPipe, "power loss: the disk is gone until restart"));
        }
        // Directories are durable at once: the journal creates its own
        // once, before anything that matters is in it.
        for d in dir.ancestors() {
            st.dirs.insert(d.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>> {
        let st = lock(&self.state);
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such directory", dir.display())));
        }
        Ok(st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, i)| {
                let name = p.file_name()?.to_str()?.to_owned();
                Some((name, st.inodes.get(i).map_or(0, |n| n.data.len() as u64)))
            })
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = lock(&self.state);
        let id = st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes.get(id).map(|n| n.data.clone()).unwrap_or_default())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut st = lock(&self.state);
        st.op()?;
        st.check_dir(path)?;
        if st.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        if let Some(cap) = st.faults.capacity
            && st.used() >= cap
        {
            st.stats.faults_injected += 1;
            return Err(no_space());
        }
        st.next_inode += 1;
        let id = st.next_inode;
        st.inodes.insert(id, Inode::default());
        st.names.insert(path.to_owned(), id);
        st.pending.push(NameOp::Create(path.to_owned(), id));
        let generation = st.generation;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), inode: id, generation }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let st = lock(&self.state);
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), inode: id, generation: st.generation }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        if st.faults.fail_syncs {
            st.stats.faults_injected += 1;
            return Err(eio("fsync after truncate"));
        }
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = st.inodes.entry(id).or_default();
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(inode.data.len());
        inode.data.truncate(len);
        inode.durable = inode.data.clone();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        st.pending.push(NameOp::Remove(path.to_owned()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        if st.faults.fail_syncs {
            st.stats.faults_injected += 1;
            return Err(eio("directory fsync"));
        }
        let pending = std::mem::take(&mut st.pending);
        let (here, elsewhere): (Vec<NameOp>, Vec<NameOp>) = pending.into_iter().partition(|op| {
            let path = match op {
                NameOp::Create(p, _) | NameOp::Remove(p) => p,
            };
            path.parent() == Some(dir)
        });
        for op in &here {
            SimState::apply(&mut st.durable_names, op);
        }
        st.pending = elsewhere;
        Ok(())
    }
}

impl SimFile {
    fn live<'a>(&self, st: &'a mut SimState) -> io::Result<&'a mut Inode> {
        if st.generation != self.generation {
            return Err(injected(io::ErrorKind::BrokenPipe, "power loss: the file handle died with it"));
        }
        st.inodes.get_mut(&self.inode).ok_or_else(|| injected(io::ErrorKind::NotFound, "lost inode"))
    }

    /// Everything written so far becomes durable, atomically under the
    /// disk's lock (a concurrent append lands wholly before or after).
    fn sync(&self) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        if st.faults.fail_syncs {
            st.stats.faults_injected += 1;
            return Err(eio("fsync"));
        }
        let inode = self.live(&mut st)?;
        inode.durable = inode.data.clone();
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        if st.faults.fail_writes {
            st.stats.faults_injected += 1;
            return Err(eio("write"));
        }
        let room = match st.faults.capacity {
            Some(cap) => usize::try_from(cap.saturating_sub(st.used())).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let fits = bytes.len().min(room);
        if fits < bytes.len() {
            st.stats.faults_injected += 1;
        }
        self.live(&mut st)?.data.extend_from_slice(&bytes[..fits]);
        if fits < bytes.len() { Err(no_space()) } else { Ok(()) }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn data_sync(&self) -> Arc<dyn DataSync> {
        Arc::new(SimFile { state: Arc::clone(&self.state), inode: self.inode, generation: self.generation })
    }
}

impl DataSync for SimFile {
    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }
}

/// SplitMix64: a few lines of a well-known generator, so the journal
/// needs no random-number crate for its test disk.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/j")
    }

    #[test]
    fn unsynced_bytes_and_names_are_lost_at_a_power_cut() {
        let disk = SimStorage::new();
        disk.create_dir_all(&dir()).unwrap();
        let a = dir().join("a");
        let mut f = disk.create_new(&a).unwrap();
        f.append(b"synced").unwrap();
        f.sync_data().unwrap();
        f.append(b" not synced").unwrap();
        assert_eq!(disk.read(&a).ok().as_deref(), Some(&b"synced not synced"[..]));
        disk.power_cut(PowerCut::DropUnsynced);
        // The name was never synced: the file is gone with its data.
        assert!(disk.read(&a).is_err());
        assert!(f.append(b"x").is_err(), "handles die with the power");

        let mut f = disk.create_new(&a).unwrap();
        disk.sync_dir(&dir()).unwrap();
        f.append(b"synced").unwrap();
        f.sync_data().unwrap();
        f.append(b" lost").unwrap();
        disk.remove(&a).unwrap();
        disk.power_cut(PowerCut::DropUnsynced);
        assert_eq!(disk.read(&a).ok().as_deref(), Some(&b"synced"[..]), "unsynced removal undone, tail dropped");
        assert_eq!(disk.stats().power_cuts, 2);
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_says_enospc() {
        let disk = SimStorage::new();
        disk.create_dir_all(&dir()).unwrap();
        disk.set_faults(Faults { capacity: Some(10), ..Faults::default() });
        let mut f = disk.create_new(&dir().join("a")).unwrap();
        let err = f.append(b"0123456789abc").expect_err("full");
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(disk.used_bytes(), 10);
        assert!(disk.create_new(&dir().join("b")).is_err());
        disk.set_faults(Faults::default());
        f.append(b"abc").unwrap();
    }

    #[test]
    fn an_armed_cut_fires_at_its_op_and_torn_cuts_are_reproducible() {
        let run = |seed| {
            let disk = SimStorage::new();
            disk.create_dir_all(&dir()).unwrap();
            let a = dir().join("a");
            let mut f = disk.create_new(&a).unwrap();
            disk.sync_dir(&dir()).unwrap();
            disk.cut_at_op(5, PowerCut::Torn { seed });
            f.append(&[7u8; 100]).unwrap();
            f.append(&[8u8; 100]).unwrap();
            assert!(f.append(&[9u8; 100]).is_err(), "op 5 is the cut");
            assert!(disk.is_down());
            assert!(disk.read(&a).is_ok());
            disk.restart();
            disk.read(&a).unwrap_or_default()
        };
        let a = run(1);
        assert_eq!(a, run(1), "same seed, same survivors");
        assert!(a.len() <= 200 && a.iter().all(|b| [0, 7, 8].contains(b)));
    }
}
