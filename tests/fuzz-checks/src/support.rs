//! The pieces every check shares: a capped allocator, an input cursor,
//! scratch directories and the journal settings of the `journal` target.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static CAP: Cell<usize> = const { Cell::new(usize::MAX) };
    static WHAT: Cell<&'static str> = const { Cell::new("") };
}

/// The system allocator with a per-thread cap on single allocations.
pub struct CappedAlloc;

fn check(size: usize) {
    let cap = CAP.try_with(Cell::get).unwrap_or(usize::MAX);
    if size > cap {
        // Lift the cap first: printing may allocate.
        let _ = CAP.try_with(|c| c.set(usize::MAX));
        let what = WHAT.try_with(Cell::get).unwrap_or("");
        eprintln!("kasmina-fuzz: allocation of {size} bytes exceeds the cap of {cap} bytes while {what}");
        std::process::abort();
    }
}

// SAFETY: forwards every call to `System` unchanged; the check only reads a
// thread-local and may abort.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` with single allocations on this thread capped at `cap` bytes
/// (`what` names the step in the abort message); restores the previous cap.
pub fn with_alloc_cap<R>(cap: usize, what: &'static str, f: impl FnOnce() -> R) -> R {
    /// Puts the previous cap back on return and on unwind (the replay
    /// catches a check's panic and goes on allocating on this thread).
    struct Restore(usize, &'static str);
    impl Drop for Restore {
        fn drop(&mut self) {
            CAP.with(|c| c.set(self.0));
            WHAT.with(|w| w.set(self.1));
        }
    }
    let _restore = Restore(CAP.with(Cell::get), WHAT.with(Cell::get));
    CAP.with(|c| c.set(cap));
    WHAT.with(|w| w.set(what));
    f()
}

/// Declares [`CappedAlloc`] as the global allocator of a target binary.
#[macro_export]
macro_rules! capped_allocator {
    () => {
        #[global_allocator]
        static ALLOC: $crate::CappedAlloc = $crate::CappedAlloc;
    };
}

/// A cursor over one fuzz input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps the raw input.
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    /// Next byte, 0 once exhausted.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// Next big-endian u16, 0-padded.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// A u16-length-prefixed piece (a "file" inside the input).
    pub fn piece(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.take(n)
    }

    /// Everything not yet taken.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Encodes pieces the way [`Input::piece`] reads them (for corpus seeds).
pub fn piece(bytes: &[u8]) -> Vec<u8> {
    let n = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut out = n.to_be_bytes().to_vec();
    out.extend_from_slice(&bytes[..usize::from(n)]);
    out
}

/// Splits `text` into annotations: records separated by `\n`, key and value
/// by the first `=` (a record without one is a key with an empty value).
/// Invalid UTF-8 is replaced, as a socket peer's strings would be refused
/// before they reach the parser.
pub fn annotation_pairs(text: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(text)
        .split('\n')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (r.to_owned(), String::new()),
        })
        .collect()
}

/// The journal configuration the `journal` target and its seeds use: small
/// bounds, so short inputs reach rotation-sized segments.
pub fn journal_config() -> kasmina_journal::JournalConfig {
    let mut c = kasmina_journal::decision_journal_config();
    c.max_record_bytes = JOURNAL_MAX_RECORD_BYTES;
    c.segment_bytes = JOURNAL_SEGMENT_BYTES;
    c.compact_after_bytes = 8 * JOURNAL_SEGMENT_BYTES;
    c
}

/// Largest journal record in [`journal_config`].
pub const JOURNAL_MAX_RECORD_BYTES: u32 = 4096;
/// Segment size before rotation in [`journal_config`].
pub const JOURNAL_SEGMENT_BYTES: u64 = 8192;

/// A scratch directory in memory (/dev/shm when present), unique per process.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("kasmina-fuzz-{name}-{}", std::process::id()))
}
