//! The storage seam: every file-system call the journal makes goes through
//! [`Storage`], so a test can put a disk under it that fails or loses power.
//!
//! [`FsStorage`] is the real thing (what the daemon uses). [`sim::SimStorage`]
//! is the test disk, after RocksDB's fault-injection file system and
//! SQLite's test VFS: it keeps what was written apart from what was synced
//! and, at a simulated power cut, drops what was not synced — so a missing
//! fsync fails a test instead of hiding behind the page cache, which a
//! SIGKILL keeps. It also runs out of space and fails writes or fsyncs on
//! request.
//!
//! The seam is small on purpose — create, append, sync, truncate, remove,
//! list, read, sync a directory — because each method is a promise the
//! simulated disk has to keep the way a real one does.

pub mod sim;
pub mod wrap;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// A file opened for appending.
pub trait StorageFile: Send + std::fmt::Debug {
    /// Appends all of `bytes` (or fails; a failure may leave a prefix of
    /// them written).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
    /// A handle that makes this file's data durable from another thread
    /// while appends go on (group commit): every byte appended before
    /// [`DataSync::sync_data`] is called is durable once it returns `Ok`;
    /// bytes appended meanwhile may or may not be.
    fn data_sync(&self) -> Arc<dyn DataSync>;
}

/// `fdatasync` of one file, callable without the file's appender (see
/// [`StorageFile::data_sync`]).
pub trait DataSync: Send + Sync + std::fmt::Debug {
    /// Makes the file's data durable.
    fn sync_data(&self) -> io::Result<()>;
}

/// The file-system calls the journal makes. Names are durable only after
/// [`Storage::sync_dir`] of their directory, data only after a sync of the
/// file — the rules a POSIX file system gives, which the simulated disk
/// enforces.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The regular files directly in `dir`: names and lengths, any order.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates `path`, which must not exist, for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens the existing `path` for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Cuts `path` to `len` bytes and makes the cut durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Removes `path` (durable after a sync of its directory).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (files created and removed in it).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

/// A real file; shared so that a [`DataSync`] handle can fsync it while
/// the appender writes (`write` and `fdatasync` on one descriptor from two
/// threads is what POSIX allows).
#[derive(Debug)]
struct FsFile(Arc<File>);

impl StorageFile for FsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&*self.0).write_all(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn data_sync(&self) -> Arc<dyn DataSync> {
        Arc::new(FsDataSync(Arc::clone(&self.0)))
    }
}

#[derive(Debug)]
struct FsDataSync(Arc<File>);

impl DataSync for FsDataSync {
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            // A name that is not UTF-8 is not one of ours.
            if let Ok(name) = entry.file_name().into_string() {
                out.push((name, meta.len()));
            }
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FsFile(Arc::new(OpenOptions::new().create_new(true).append(true).open(path)?))))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FsFile(Arc::new(OpenOptions::new().append(true).open(path)?))))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
