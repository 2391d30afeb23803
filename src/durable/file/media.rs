//! The storage boundary: the few file operations the log makes, so that tests can put faults
//! and crashes between the log and the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
#[cfg(not(unix))]
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What the log asks of its storage.
pub(super) trait Media: Send + 'static {
    /// Writes `bytes` at the end of the log.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes everything appended durable.
    fn sync(&mut self) -> io::Result<()>;

    /// Writes `bytes` at the end of the log's replacement, which the first call after a
    /// [`swap`](Self::swap) (or ever) starts empty.
    fn append_new(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes the replacement durable and puts it in the log's place in one step; appends go to
    /// it from now on.
    fn swap(&mut self) -> io::Result<()>;
}

/// The log's files in a directory: `log`, `log.new` while a compaction writes it, and `lock`,
/// which the store holds locked while it is open.
///
/// The log is written in place ahead of its end: its file grows by [`PREALLOCATE`] bytes of
/// zeros at a time, written out, so that a sync after an append flushes data only, and not the
/// file's length and block map each time (on ext4 that is the difference between a data flush
/// and a journal commit per sync). Recovery reads the zeros after the last batch as the end.
#[derive(Debug)]
pub(super) struct Disk {
    dir: PathBuf,
    log: File,
    /// Where the next batch goes.
    end: u64,
    /// The file's length: zeros from `end` on.
    allocated: u64,
    new: Option<File>,
    // Held for the lock on it.
    _lock: File,
}

/// How much the log grows by at a time.
const PREALLOCATE: u64 = 1 << 20;

/// The name of the log in its directory.
pub(super) const LOG: &str = "log";
const NEW: &str = "log.new";
const LOCK: &str = "lock";

/// Why a directory cannot be opened.
#[derive(Debug)]
pub(super) enum OpenFailed {
    Locked,
    Io(io::Error),
}

impl From<io::Error> for OpenFailed {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl Disk {
    /// Opens (creating it and the directory if need be) the log in `dir`, locked for this
    /// process; a compaction that a crash interrupted is thrown away. The log is to be read
    /// from the returned file, and then [`truncate`](Self::truncate)d to what checked.
    pub(super) fn open(dir: &Path) -> Result<(Self, File), OpenFailed> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        // `File::try_lock` is Rust 1.89: the file store's feature needs it.
        #[allow(clippy::incompatible_msrv)]
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenFailed::Locked),
            Err(fs::TryLockError::Error(err)) => return Err(err.into()),
        }
        match fs::remove_file(dir.join(NEW)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err.into()),
            _ => {}
        }
        let log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(LOG))?;
        let reader = File::open(dir.join(LOG))?;
        let len = log.metadata()?.len();
        let disk = Self {
            dir: dir.to_owned(),
            log,
            end: len,
            allocated: len,
            new: None,
            _lock: lock,
        };
        Ok((disk, reader))
    }

    /// Cuts the log to `len` bytes, what checked, and makes that durable: nothing of a torn
    /// batch stays behind the batches to come.
    pub(super) fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.log.set_len(len)?;
        self.log.sync_all()?;
        (self.end, self.allocated) = (len, len);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        // Directories are opened to be synced on Unix; elsewhere a rename is durable on its own
        // or cannot be made so from here.
        #[cfg(unix)]
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Makes the log's creation durable: its header, and its name in the directory.
    pub(super) fn created(&mut self) -> io::Result<()> {
        self.log.sync_all()?;
        self.sync_dir()
    }

    /// Writes `bytes` at `at` in the log.
    fn write_at(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        // One positional write (`pwrite`), not a seek and a write.
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.log.write_all_at(bytes, at)
        }
        #[cfg(not(unix))]
        {
            self.log.seek(SeekFrom::Start(at))?;
            self.log.write_all(bytes)
        }
    }
}

impl Media for Disk {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let needed = self.end + bytes.len() as u64;
        if needed > self.allocated {
            // Zeros, written out: blocks the file system has allocated and marked written.
            let grow = (needed - self.allocated).next_multiple_of(PREALLOCATE);
            let zeros = vec![0; PREALLOCATE as usize];
            let mut at = self.allocated;
            while at < self.allocated + grow {
                self.write_at(&zeros, at)?;
                at += PREALLOCATE;
            }
            self.allocated += grow;
        }
        self.write_at(bytes, self.end)?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()
    }

    fn append_new(&mut self, bytes: &[u8]) -> io::Result<()> {
        let new = match &mut self.new {
            Some(new) => new,
            None => self.new.insert(
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(self.dir.join(NEW))?,
            ),
        };
        new.write_all(bytes)
    }

    fn swap(&mut self) -> io::Result<()> {
        let new = self.new.take().expect("a replacement was written");
        new.sync_all()?;
        fs::rename(self.dir.join(NEW), self.dir.join(LOG))?;
        self.sync_dir()?;
        self.log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(LOG))?;
        let len = self.log.metadata()?.len();
        (self.end, self.allocated) = (len, len);
        Ok(())
    }
}
