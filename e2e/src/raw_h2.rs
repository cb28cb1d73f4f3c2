//! An HTTP/2 (h2c, prior knowledge) origin that writes its frames by hand, to script what a
//! well-behaved server library does not let a test choose: a GOAWAY whose last stream is
//! below streams in flight (what nginx sends at `keepalive_requests`), `REFUSED_STREAM`
//! resets, and a connection closed under a request.
//!
//! Each connection follows the [`Script`] at its index in the origin's list (later ones
//! [`Script::Answer`]). A request is answered `200` with the body `c{N} {request body}`,
//! `N` the connection's number from 1, so a test sees which connection processed it and
//! with which body. Request headers are not decoded (HPACK): only stream ids, flags and
//! DATA payloads are read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
/// How long a connection waits for the frames its script expects.
const WAIT: Duration = Duration::from_secs(10);

/// What one connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Answers every request.
    Answer,
    /// Once `n` requests have arrived whole: GOAWAY with the lowest of their streams as
    /// the last, answers that one, and closes. The others were refused unprocessed.
    GoAwayAfter(usize),
    /// Answers the first request; at the second, closes the connection without a word
    /// (no GOAWAY, no reset): to the client the request may have been processed.
    CloseAtSecond,
    /// Resets the first request's stream with `REFUSED_STREAM`; answers the others.
    RefuseFirst,
    /// Allows one stream at a time (`SETTINGS_MAX_CONCURRENT_STREAMS` 1): at the first
    /// whole request, waits a moment (the client queues its next requests for a stream
    /// slot), then GOAWAY with that stream as the last, answers it, and closes.
    OneStreamThenGoAway,
}

/// A request the origin saw: its connection (from 1), stream and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The connection's number, from 1.
    pub connection: usize,
    /// The stream id.
    pub stream: u32,
    /// The request body.
    pub body: Vec<u8>,
    /// Whether the origin answered it (a refused or ignored request is not).
    pub answered: bool,
}

/// A running raw HTTP/2 origin on 127.0.0.1 (stopped when dropped).
pub struct RawH2Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Drop for RawH2Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawH2Origin {
    /// Listens on a free loopback port; connection `i` (from 0) follows `scripts[i]`.
    pub async fn start(scripts: Vec<Script>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let number = {
                        let mut n = connections.lock().unwrap_or_else(PoisonError::into_inner);
                        *n += 1;
                        *n
                    };
                    let script = scripts.get(number - 1).copied().unwrap_or(Script::Answer);
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let mut conn = Conn { io: stream, number, seen, streams: Vec::new() };
                        // A connection that breaks ends the test's exchange on it; the
                        // test sees that as a failed request.
                        let _ = tokio::time::timeout(WAIT * 3, conn.run(script)).await;
                    });
                }
            }
        });
        Ok(RawH2Origin { addr, seen, connections, task })
    }

    /// Every request seen so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Stream {
    id: u32,
    body: Vec<u8>,
    ended: bool,
    /// Index in the origin's `seen` list.
    seen: usize,
}

struct Conn {
    io: TcpStream,
    number: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    streams: Vec<Stream>,
}

impl Conn {
    async fn run(&mut self, script: Script) -> std::io::Result<()> {
        let mut preface = [0u8; PREFACE.len()];
        self.io.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(std::io::Error::other("not an HTTP/2 preface"));
        }
        if script == Script::OneStreamThenGoAway {
            // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 1.
            self.frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 1]).await?;
        } else {
            self.frame(SETTINGS, 0, 0, &[]).await?;
        }
        match script {
            Script::OneStreamThenGoAway => {
                let first = self.next_ended().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.go_away(self.streams[first].id).await?;
                self.answer(first).await?;
                self.close().await
            }
            Script::Answer => loop {
                let ended = self.next_ended().await?;
                self.answer(ended).await?;
            },
            Script::RefuseFirst => {
                let first = self.next_ended().await?;
                let id = self.streams[first].id;
                self.frame(RST_STREAM, 0, id, &REFUSED_STREAM.to_be_bytes()).await?;
                loop {
                    let ended = self.next_ended().await?;
                    self.answer(ended).await?;
                }
            }
            Script::GoAwayAfter(n) => {
                while self.streams.iter().filter(|s| s.ended).count() < n {
                    self.next_ended().await?;
                }
                let lowest = (0..self.streams.len())
                    .filter(|&i| self.streams[i].ended)
                    .min_by_key(|&i| self.streams[i].id)
                    .unwrap_or(0);
                self.go_away(self.streams[lowest].id).await?;
                self.answer(lowest).await?;
                self.close().await
            }
            Script::CloseAtSecond => {
                let first = self.next_ended().await?;
                self.answer(first).await?;
                self.next_ended().await?;
                self.close().await
            }
        }
    }

    /// Reads frames until a stream's request has arrived whole; its index.
    async fn next_ended(&mut self) -> std::io::Result<usize> {
        loop {
            if let Some(i) = self.read_frame().await? {
                return Ok(i);
            }
        }
    }

    /// Reads one frame; the index of the stream it ended, if it ended one.
    async fn read_frame(&mut self) -> std::io::Result<Option<usize>> {
        let mut head = [0u8; 9];
        tokio::time::timeout(WAIT, self.io.read_exact(&mut head))
            .await
            .map_err(|_| std::io::Error::other("no frame within the wait"))??;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        match kind {
            SETTINGS if flags & ACK == 0 => self.frame(SETTINGS, ACK, 0, &[]).await?,
            PING if flags & ACK == 0 => self.frame(PING, ACK, 0, &payload).await?,
            HEADERS => {
                let seen = {
                    let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.push(Seen {
                        connection: self.number,
                        stream: id,
                        body: Vec::new(),
                        answered: false,
                    });
                    seen.len() - 1
                };
                self.streams.push(Stream { id, body: Vec::new(), ended: false, seen });
                if flags & END_STREAM != 0 {
                    return Ok(self.end(id));
                }
            }
            DATA => {
                if let Some(stream) = self.streams.iter_mut().find(|s| s.id == id) {
                    stream.body.extend_from_slice(&payload);
                    let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen[stream.seen].body.extend_from_slice(&payload);
                }
                if flags & END_STREAM != 0 {
                    return Ok(self.end(id));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn end(&mut self, id: u32) -> Option<usize> {
        let i = self.streams.iter().position(|s| s.id == id)?;
        self.streams[i].ended = true;
        Some(i)
    }

    async fn answer(&mut self, i: usize) -> std::io::Result<()> {
        let id = self.streams[i].id;
        self.frame(HEADERS, END_HEADERS, id, &[0x88]).await?;
        self.finish(i).await
    }

    /// The response body of stream `i` (its head was sent), ending the stream.
    async fn finish(&mut self, i: usize) -> std::io::Result<()> {
        let mut body = format!("c{} ", self.number).into_bytes();
        body.extend_from_slice(&self.streams[i].body);
        self.frame(DATA, END_STREAM, self.streams[i].id, &body).await?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen[self.streams[i].seen].answered = true;
        Ok(())
    }

    async fn go_away(&mut self, last: u32) -> std::io::Result<()> {
        let mut payload = last.to_be_bytes().to_vec();
        payload.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
        self.frame(GOAWAY, 0, 0, &payload).await
    }

    /// Ends the connection: no more writes, then reads to the peer's close (so that no
    /// unread byte turns the close into a reset that could lose the last frames).
    async fn close(&mut self) -> std::io::Result<()> {
        self.io.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tokio::time::timeout(WAIT, self.io.read(&mut sink))
            .await
            .is_ok_and(|n| n.is_ok_and(|n| n > 0))
        {}
        Ok(())
    }

    async fn frame(&mut self, kind: u8, flags: u8, id: u32, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?.to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await
    }
}
