//! The access log's writer thread: drains the queue into one buffer, writes the buffer out
//! when the queue is momentarily empty (or the buffer is large), reopens a file target
//! when asked. Errors never stop it: the lines are counted as dropped and the first error
//! of a run of them is logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::{AccessLogFormat, AccessLogTarget, Message, format};

/// Past this many buffered bytes the buffer is written out even while lines keep coming.
const WRITE_AT: usize = 64 * 1024;

/// Where the writer writes.
#[derive(Debug)]
pub(super) enum Sink {
    /// Standard output (each write of whole lines goes straight through its line buffer).
    Stdout(io::Stdout),
    /// A file opened for appending.
    File {
        /// The path, for reopening.
        path: PathBuf,
        /// The open file.
        file: File,
    },
}

impl Sink {
    /// Opens `target`: a missing directory is an error that says so.
    pub(super) fn open(target: &AccessLogTarget) -> io::Result<Sink> {
        match target {
            AccessLogTarget::Stdout => Ok(Sink::Stdout(io::stdout())),
            AccessLogTarget::Path(path) => {
                Ok(Sink::File { path: path.clone(), file: open_file(path)? })
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Opens the path again (after logrotate moved the file); keeps the old file when
    /// that fails.
    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_file(path) {
                Ok(new) => *file = new,
                Err(error) => tracing::warn!(
                    path = %path.display(), %error,
                    "cannot reopen the access log, still writing to the old file"
                ),
            }
        }
    }
}

/// Opens `path` for appending, creating it when missing.
fn open_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("directory {} does not exist", dir.display()),
        ));
    }
    OpenOptions::new().append(true).create(true).open(path)
}

/// The writer thread's state.
pub(super) struct Writer {
    sink: Sink,
    format: AccessLogFormat,
    queue: mpsc::Receiver<Message>,
    reopen: Arc<AtomicBool>,
    lines: Counter,
    dropped: Counter,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    scratch: String,
    /// The last write failed (the next failure is not logged again).
    failing: bool,
}

/// How often the writer looks at the queue when it found it empty.
pub(super) const POLL: std::time::Duration = std::time::Duration::from_millis(10);

impl Writer {
    pub(super) fn new(
        sink: Sink,
        format: AccessLogFormat,
        queue: mpsc::Receiver<Message>,
        reopen: Arc<AtomicBool>,
        lines: Counter,
        dropped: Counter,
    ) -> Self {
        Writer {
            sink,
            format,
            queue,
            reopen,
            lines,
            dropped,
            buf: Vec::with_capacity(WRITE_AT + 4096),
            pending: 0,
            scratch: String::new(),
            failing: false,
        }
    }

    /// Runs until the access log is dropped (every sender gone), then writes out what is
    /// left. The queue is polled every [`POLL`] rather than waited on: a writer blocked in
    /// `recv` would be woken by the request that queued the first line after each drain —
    /// a futex wake and a context switch per request at moderate rates, which measured
    /// 1.45x the CPU per request of no access log on one core. Polling costs 100 wake-ups
    /// a second and delays a line by at most `POLL`; 8,192 queued lines per 10 ms is
    /// 800k lines/s before anything is dropped.
    pub(super) fn run(mut self) {
        loop {
            loop {
                match self.queue.try_recv() {
                    Ok(message) => {
                        self.take(message);
                        if self.buf.len() >= WRITE_AT {
                            self.write_out();
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.write_out();
                        return;
                    }
                }
            }
            self.write_out();
            std::thread::sleep(POLL);
        }
    }

    fn take(&mut self, message: Message) {
        if self.reopen.load(Ordering::Relaxed) && self.reopen.swap(false, Ordering::Acquire) {
            // What came before the signal goes to the old file.
            self.write_out();
            self.sink.reopen();
        }
        match message {
            Message::Line(record) => {
                format::line(self.format, &record, &mut self.buf, &mut self.scratch);
                self.pending += 1;
            }
            Message::Wake => {}
            Message::Flush(done) => {
                self.write_out();
                let _ = done.send(());
            }
        }
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.sink.write_all(&self.buf) {
            Ok(()) => {
                self.lines.inc_by(self.pending);
                if self.failing {
                    self.failing = false;
                    tracing::info!("the access log is written again");
                }
            }
            Err(error) => {
                self.dropped.inc_by(self.pending);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(%error, "cannot write the access log, dropping lines");
                }
            }
        }
        self.buf.clear();
        self.pending = 0;
        // A burst may have grown the buffer far past its usual size.
        if self.buf.capacity() > 16 * WRITE_AT {
            self.buf.shrink_to(WRITE_AT + 4096);
        }
    }
}
