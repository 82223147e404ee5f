//! Compressed transactions (MySQL `binlog_transaction_compression`): the driver hands out
//! a TRANSACTION_PAYLOAD_EVENT's inner events after it. They carry no position
//! (`log_pos` 0): the transaction ends where the payload event does.

/// A TRANSACTION_PAYLOAD_EVENT whose inner events are being read.
#[derive(Debug, Clone, Copy)]
struct Payload {
    end: u32,
    inner: u32,
}

/// The compressed transaction being read, if any.
#[derive(Debug, Default)]
pub(super) struct Payloads(Option<Payload>);

impl Payloads {
    /// A payload event ending at `end`: its inner events follow.
    pub(super) fn start(&mut self, end: u32) {
        self.0 = Some(Payload { end, inner: 0 });
    }

    /// The position of an event: its own, or for an event inside a compressed
    /// transaction the payload's end. Fails when a payload's inner events never came
    /// (the driver hands out none when it cannot decompress them).
    pub(super) fn position(&mut self, log_pos: u32, file: &str) -> warp_core::Result<u32> {
        let Some(payload) = self.0 else {
            return Ok(log_pos);
        };
        if log_pos == 0 {
            self.0 = Some(Payload {
                inner: payload.inner + 1,
                ..payload
            });
            return Ok(payload.end);
        }
        self.0 = None;
        if payload.inner == 0 {
            return Err(warp_core::Error::source_permanent(
                format!(
                    "{file}: the compressed transaction ending at {} could not be decompressed",
                    payload.end
                ),
                Some(
                    "set binlog_transaction_compression=OFF on the server and resync the tables"
                        .into(),
                ),
            ));
        }
        Ok(log_pos)
    }
}
