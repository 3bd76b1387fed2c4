//! The dev stack's access log: one line per proxied request, in a
//! size-capped, rotated file, written off the request path.
//!
//! A request never waits for the disk: the formatted line goes into a
//! bounded queue (`try_send`); a writer thread drains it into the file. When
//! the queue is full the line is dropped and counted, and the writer notes
//! how many went missing in the file itself. The file is rotated when the
//! next line would take it past the cap: `access.log` becomes
//! `access.log.1`, `access.log.1` becomes `access.log.2`, and so on up to
//! `keep` old files; the oldest is deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// Lines that may wait for the writer thread before new ones are dropped.
const QUEUE: usize = 64 * 1024;

enum Msg {
    Line(Vec<u8>),
    /// Flush the file, then acknowledge.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` handed to the access-log layer: cheap to clone, never
/// blocks.
#[derive(Clone)]
pub(crate) struct AccessLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Stops accepting nothing but makes sure what was queued reaches the disk:
/// dropping it flushes the file (bounded wait).
pub(crate) struct FlushGuard {
    tx: SyncSender<Msg>,
    _thread: JoinHandle<()>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// Opens (appends to) `path`, rotating at `max_bytes` and keeping `keep` old
/// files, and starts the writer thread.
pub(crate) fn open(
    path: &Path,
    max_bytes: u64,
    keep: usize,
) -> anyhow::Result<(AccessLog, FlushGuard)> {
    let file = Rotating::open(path.to_path_buf(), max_bytes, keep)
        .with_context(|| format!("opening the access log {}", path.display()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&dropped);
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || drain(rx, file, &counter))
        .context("starting the access-log writer")?;
    Ok((
        AccessLog {
            tx: tx.clone(),
            dropped,
        },
        FlushGuard {
            tx,
            _thread: thread,
        },
    ))
}

fn drain(rx: Receiver<Msg>, mut file: Rotating, dropped: &AtomicU64) {
    let mut reported = 0;
    loop {
        // Flush whenever the queue runs dry, so the file is current when idle.
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                file.flush();
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let lost = dropped.load(Ordering::Relaxed);
        if lost > reported {
            file.write(
                format!(
                    "[access log: {} line(s) dropped, the writer fell behind]\n",
                    lost - reported
                )
                .as_bytes(),
            );
            reported = lost;
        }
        match msg {
            Msg::Line(line) => file.write(&line),
            Msg::Flush(ack) => {
                file.flush();
                let _ = ack.send(());
            }
        }
    }
    file.flush();
}

/// A file that rotates itself at a size cap. Write errors are reported once
/// on stderr and otherwise ignored: the access log must never stop the proxy.
struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
    failed: bool,
}

impl Rotating {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            keep,
            out: BufWriter::new(file),
            size,
            failed: false,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }

    fn write(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        let result = (|| {
            if self.size > 0 && self.size + len > self.max_bytes {
                self.rotate()?;
            }
            self.out.write_all(line)
        })();
        match result {
            Ok(()) => self.size += len,
            Err(e) => self.report(&e),
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.report(&e);
        }
    }

    fn report(&mut self, e: &std::io::Error) {
        if !self.failed {
            self.failed = true;
            eprintln!(
                "switchyard dev: cannot write the access log {}: {e}",
                self.path.display()
            );
        }
    }
}

/// One formatted event: collected, then queued whole when the formatter is
/// done with it.
pub(crate) struct LineWriter {
    buf: Vec<u8>,
    log: AccessLog,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        if self.log.tx.try_send(Msg::Line(line)).is_err() {
            self.log.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AccessLog {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            buf: Vec::with_capacity(256),
            log: self.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d = std::env::temp_dir().join(format!(
            "switchyard-accesslog-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rotates_at_the_cap_and_keeps_only_the_newest_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("access.log");
        let (log, guard) = open(&path, 1000, 2).unwrap();
        // 100 lines of 100 bytes: ten files' worth; only three may remain.
        for i in 0..100 {
            let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&log);
            let line = format!("{i:>99}\n");
            w.write_all(line.as_bytes()).unwrap();
        }
        drop(guard);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["access.log", "access.log.1", "access.log.2"]);
        for name in &names {
            let len = std::fs::metadata(dir.join(name)).unwrap().len();
            assert!(len <= 1000, "{name} is {len} bytes");
        }
        // The newest lines are in access.log, in order.
        let current = std::fs::read_to_string(&path).unwrap();
        let last: Vec<&str> = current.lines().map(str::trim).collect();
        assert_eq!(last.last(), Some(&"99"));
        let older = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        assert_eq!(older.lines().count(), 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = temp_dir("append");
        let path = dir.join("access.log");
        std::fs::write(&path, "old\n").unwrap();
        let (log, guard) = open(&path, 1 << 20, 1).unwrap();
        let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&log);
        w.write_all(b"new\n").unwrap();
        drop(w);
        drop(guard);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
