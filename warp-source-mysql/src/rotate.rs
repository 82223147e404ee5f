//! The binlog file a rotate event names.
//!
//! A dump starts with an artificial rotate event sent before the format description
//! event, so the decoder cannot know yet whether events end in a CRC32 checksum: with
//! `binlog_checksum = CRC32` (the default of MySQL 5.6.6+ and MariaDB 10.2+) the event's
//! body is the position, the file name and 4 checksum bytes. The checksum is recognised
//! by verifying it — any of its bytes can be a digit or a `.`, so the name's characters
//! cannot tell where it ends.

use mysql_async::binlog::events::{BinlogEventHeader, Event};

/// Bytes before the name in a rotate event's body (the position in the new file).
const POSITION_LEN: usize = 8;
const CHECKSUM_LEN: usize = 4;

/// The file named by the rotate event `event`.
pub fn target(event: &Event) -> String {
    name(&header_bytes(&event.header()), event.data())
}

/// The event's header as it was on the wire (what the checksum covers first).
fn header_bytes(h: &BinlogEventHeader) -> [u8; BinlogEventHeader::LEN] {
    let mut out = [0u8; BinlogEventHeader::LEN];
    out[0..4].copy_from_slice(&h.timestamp().to_le_bytes());
    out[4] = h.event_type_raw();
    out[5..9].copy_from_slice(&h.server_id().to_le_bytes());
    out[9..13].copy_from_slice(&h.event_size().to_le_bytes());
    out[13..17].copy_from_slice(&h.log_pos().to_le_bytes());
    out[17..19].copy_from_slice(&h.flags_raw().to_le_bytes());
    out
}

/// The name in `body`, without a trailing checksum of `header` + the rest of the body.
fn name(header: &[u8], body: &[u8]) -> String {
    let mut name = body.get(POSITION_LEN..).unwrap_or_default();
    if body.len() >= POSITION_LEN + CHECKSUM_LEN {
        let (covered, checksum) = body.split_at(body.len() - CHECKSUM_LEN);
        let mut crc = crc32fast::Hasher::new();
        crc.update(header);
        crc.update(covered);
        if checksum == crc.finalize().to_le_bytes() {
            name = &covered[POSITION_LEN..];
        }
    }
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotate event's header and body as a server sends them, with a checksum when
    /// `checksummed`.
    fn event(file: &str, position: u64, checksummed: bool) -> ([u8; 19], Vec<u8>) {
        let mut body = position.to_le_bytes().to_vec();
        body.extend_from_slice(file.as_bytes());
        let size = 19 + body.len() + if checksummed { CHECKSUM_LEN } else { 0 };
        let mut header = [0u8; 19];
        header[4] = 4; // ROTATE_EVENT
        header[5..9].copy_from_slice(&1u32.to_le_bytes());
        header[9..13].copy_from_slice(&u32::try_from(size).unwrap().to_le_bytes());
        header[17..19].copy_from_slice(&0x20u16.to_le_bytes()); // LOG_EVENT_ARTIFICIAL_F
        if checksummed {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&header);
            crc.update(&body);
            body.extend_from_slice(&crc.finalize().to_le_bytes());
        }
        (header, body)
    }

    #[test]
    fn checksums_are_recognised_whatever_their_bytes() {
        assert_eq!(
            name(
                &event("mysql-bin.000001", 4, false).0,
                &event("mysql-bin.000001", 4, false).1
            ),
            "mysql-bin.000001"
        );
        // Checksums whose first byte is `.` and whose bytes are digits: the position
        // field varies the checksum until both shapes occur.
        let mut shapes = [false; 2];
        for position in 4..200_000u64 {
            let (header, body) = event("mysql-bin.000001", position, true);
            let crc = &body[body.len() - CHECKSUM_LEN..];
            let dot = crc[0] == b'.';
            let digits = crc.iter().all(u8::is_ascii_digit);
            if !(dot || digits) {
                continue;
            }
            assert_eq!(name(&header, &body), "mysql-bin.000001", "{crc:?}");
            shapes[usize::from(digits)] = true;
            if shapes == [true, true] {
                break;
            }
        }
        assert!(shapes[0], "a checksum starting with '.' was tried");
        // Seven-digit sequence numbers (after mysql-bin.999999) are kept whole.
        let (header, body) = event("mysql-bin.1000000", 4, true);
        assert_eq!(name(&header, &body), "mysql-bin.1000000");
        let (header, body) = event("host.example-bin.000042", 4, false);
        assert_eq!(name(&header, &body), "host.example-bin.000042");
    }
}
