//! The storage boundary: the few file operations the log makes, so that tests can put faults
//! and crashes between the log and the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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
#[derive(Debug)]
pub(super) struct Disk {
    dir: PathBuf,
    log: File,
    new: Option<File>,
    // Held for the lock on it.
    _lock: File,
}

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
    /// process; a compaction that a crash interrupted is thrown away.
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
            .append(true)
            .open(dir.join(LOG))?;
        let reader = File::open(dir.join(LOG))?;
        let disk = Self {
            dir: dir.to_owned(),
            log,
            new: None,
            _lock: lock,
        };
        Ok((disk, reader))
    }

    /// Cuts the log to `len` bytes and makes that durable.
    pub(super) fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.log.set_len(len)?;
        self.log.sync_all()
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
}

impl Media for Disk {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.log.write_all(bytes)
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
        self.log = OpenOptions::new().append(true).open(self.dir.join(LOG))?;
        Ok(())
    }
}
