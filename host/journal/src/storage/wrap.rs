//! [`WrapFiles`]: a storage that changes what its files do and nothing
//! else — for durability tests that hold, fail or skip a file's syncs (a
//! slow disk at a chosen moment, a journal that forgets an fsync) on top
//! of the simulated disk, without restating every directory call.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{Storage, StorageFile};

/// What [`WrapFiles`] does to each file it opens.
pub type FileWrapper = dyn Fn(Box<dyn StorageFile>) -> Box<dyn StorageFile> + Send + Sync;

/// Delegates every call to `inner`, passing each file it creates or opens
/// through a wrapper; optionally turns directory syncs into no-ops (the
/// other durability bug a test may need to stage).
#[derive(Clone)]
pub struct WrapFiles {
    inner: Arc<dyn Storage>,
    wrap: Arc<FileWrapper>,
    skip_dir_sync: bool,
}

impl std::fmt::Debug for WrapFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrapFiles").field("inner", &self.inner).field("skip_dir_sync", &self.skip_dir_sync).finish()
    }
}

impl WrapFiles {
    /// `inner` with every opened file passed through `wrap`.
    pub fn new(
        inner: Arc<dyn Storage>,
        wrap: impl Fn(Box<dyn StorageFile>) -> Box<dyn StorageFile> + Send + Sync + 'static,
    ) -> Self {
        WrapFiles { inner, wrap: Arc::new(wrap), skip_dir_sync: false }
    }

    /// The same, with directory syncs that do nothing (a negative control:
    /// a journal on it must be caught losing names at a power cut).
    pub fn skipping_dir_syncs(mut self) -> Self {
        self.skip_dir_sync = true;
        self
    }
}

impl Storage for WrapFiles {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>> {
        self.inner.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok((self.wrap)(self.inner.create_new(path)?))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok((self.wrap)(self.inner.open_append(path)?))
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.skip_dir_sync { Ok(()) } else { self.inner.sync_dir(dir) }
    }
}
