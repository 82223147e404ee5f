//! A TCP proxy in front of the MariaDB peer that rewrites what a binlog client sends and
//! receives, so the reader meets MySQL 8's exact byte shapes (compressed transactions,
//! GTID events and GTID dumps) from the one server these suites have.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const HEADER: usize = 19;
pub const QUERY_EVENT: u8 = 2;
pub const ROTATE: u8 = 4;
pub const XID_EVENT: u8 = 16;
pub const HEARTBEAT: u8 = 27;
pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
pub const COM_QUERY: u8 = 0x03;
pub const COM_BINLOG_DUMP: u8 = 0x12;
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;

/// What a proxy connection changes.
pub trait Rewrite: Send + 'static {
    /// One event of the dump (header, body and checksum): the events to send instead.
    fn event(&mut self, event: Vec<u8>) -> Vec<Vec<u8>>;

    /// A command the client sent: the commands to send the server instead. The replies
    /// of all but the last are dropped (each must answer with one packet, like `SET`).
    fn command(&mut self, command: Vec<u8>) -> Vec<Vec<u8>> {
        vec![command]
    }
}

/// One MySQL protocol packet: (sequence id, payload).
pub async fn read_packet(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], payload))
}

async fn write_packet(
    w: &mut (impl AsyncWrite + Unpin),
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len().to_le_bytes();
    w.write_all(&[len[0], len[1], len[2], seq]).await?;
    w.write_all(payload).await
}

pub fn event_type(event: &[u8]) -> u8 {
    event[4]
}

pub fn timestamp(event: &[u8]) -> u32 {
    u32::from_le_bytes(event[..4].try_into().unwrap())
}

pub fn server_id(event: &[u8]) -> u32 {
    u32::from_le_bytes(event[5..9].try_into().unwrap())
}

pub fn log_pos(event: &[u8]) -> u32 {
    u32::from_le_bytes(event[13..17].try_into().unwrap())
}

/// The event's body: after the header, before the checksum.
pub fn body(event: &[u8]) -> &[u8] {
    &event[HEADER..event.len() - 4]
}

/// A header of `len` bytes in all (checksum included) ending at `log_pos`.
pub fn header(ty: u8, timestamp: u32, server_id: u32, len: usize, log_pos: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER);
    h.extend(timestamp.to_le_bytes());
    h.push(ty);
    h.extend(server_id.to_le_bytes());
    h.extend(u32::try_from(len).unwrap().to_le_bytes());
    h.extend(log_pos.to_le_bytes());
    h.extend(0u16.to_le_bytes());
    h
}

/// An event of type `ty` in `like`'s place (its time, server and end position), with
/// `body` and a CRC32 checksum.
pub fn event_like(like: &[u8], ty: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER + body.len() + 4;
    let mut event = header(ty, timestamp(like), server_id(like), len, log_pos(like));
    event.extend(body);
    let crc = crc32fast::hash(&event);
    event.extend(crc.to_le_bytes());
    event
}

/// Listens on a local port and relays each connection to `upstream` through a
/// rewriter from `make`.
pub async fn start<R: Rewrite>(
    upstream: String,
    make: impl Fn() -> R + Send + Sync + 'static,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let rewriter = make();
            tokio::spawn(async move {
                let _ = relay(client, server, rewriter).await;
            });
        }
    });
    port
}

async fn relay<R: Rewrite>(
    client: TcpStream,
    server: TcpStream,
    rewriter: R,
) -> std::io::Result<()> {
    let rewriter = Arc::new(std::sync::Mutex::new(rewriter));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let dumping = Arc::new(AtomicBool::new(false));
    let dropped_replies = Arc::new(AtomicUsize::new(0));
    {
        let (dumping, dropped_replies, rewriter) = (
            Arc::clone(&dumping),
            Arc::clone(&dropped_replies),
            Arc::clone(&rewriter),
        );
        tokio::spawn(async move {
            while let Ok((seq, payload)) = read_packet(&mut cr).await {
                // A command starts at sequence 0; the dump request is the last one sent.
                if seq != 0 {
                    if write_packet(&mut sw, seq, &payload).await.is_err() {
                        break;
                    }
                    continue;
                }
                if matches!(
                    payload.first(),
                    Some(&COM_BINLOG_DUMP | &COM_BINLOG_DUMP_GTID)
                ) {
                    dumping.store(true, Ordering::SeqCst);
                }
                let commands = rewriter.lock().unwrap().command(payload);
                dropped_replies.fetch_add(commands.len() - 1, Ordering::SeqCst);
                for command in commands {
                    if write_packet(&mut sw, 0, &command).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut next_seq: Option<u8> = None;
    loop {
        let (seq, payload) = read_packet(&mut sr).await?;
        if dropped_replies.load(Ordering::SeqCst) > 0 {
            dropped_replies.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let is_event = dumping.load(Ordering::SeqCst) && payload.first() == Some(&0);
        if !is_event {
            // Packets after the rewritten ones continue their numbering.
            let seq_out = next_seq.unwrap_or(seq);
            write_packet(&mut cw, seq_out, &payload).await?;
            next_seq = next_seq.map(|s| s.wrapping_add(1));
            continue;
        }
        let mut seq_out = next_seq.unwrap_or(seq);
        let events = rewriter.lock().unwrap().event(payload[1..].to_vec());
        for event in events {
            let mut packet = vec![0u8];
            packet.extend(event);
            write_packet(&mut cw, seq_out, &packet).await?;
            seq_out = seq_out.wrapping_add(1);
        }
        next_seq = Some(seq_out);
    }
}
