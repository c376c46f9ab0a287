//! The shard's operation codes, carried in every submission's `user_data`
//! through [`uring_kit::Token`] (operation, direction, generation, slot).

use uring_kit::Token;

/// What a submission was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept; `slot` is the listener index.
    Accept = 1,
    /// A read of the command eventfd.
    Command = 2,
    Connect = 3,
    ConnectTimeout = 4,
    Recv = 5,
    Send = 6,
    PollIn = 7,
    PollOut = 8,
    SpliceIn = 9,
    SpliceOut = 10,
    /// A cancel made for a pair (counted in its in-flight operations).
    Cancel = 11,
    /// Fire-and-forget (closes, accept cancels): the completion is dropped.
    Ignore = 12,
    /// The timeout that wakes the loop for the timer wheel; `slot` carries
    /// the arming's sequence number.
    Wake = 13,
    /// Another shard handed this one a queue slot (`IORING_OP_MSG_RING`).
    Handoff = 14,
    /// The client of a pair waiting for its PROXY header is readable.
    ProxyPoll = 15,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Accept,
            2 => Command,
            3 => Connect,
            4 => ConnectTimeout,
            5 => Recv,
            6 => Send,
            7 => PollIn,
            8 => PollOut,
            9 => SpliceIn,
            10 => SpliceOut,
            11 => Cancel,
            12 => Ignore,
            13 => Wake,
            14 => Handoff,
            15 => ProxyPoll,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub op: Op,
    /// Direction: 0 client → server, 1 server → client.
    pub dir: usize,
    pub generation: u32,
    pub slot: u32,
}

impl Tag {
    pub fn new(op: Op, slot: u32, generation: u32, dir: usize) -> Tag {
        Tag {
            op,
            dir,
            generation,
            slot,
        }
    }

    pub fn encode(self) -> u64 {
        Token::new(self.op as u8, self.slot, self.generation, self.dir as u8).encode()
    }

    pub fn decode(v: u64) -> Option<Tag> {
        let t = Token::decode(v);
        Some(Tag {
            op: Op::from_u8(t.op)?,
            dir: usize::from(t.dir),
            generation: t.generation,
            slot: t.slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for op in [Op::Accept, Op::Recv, Op::SpliceOut, Op::Ignore] {
            for dir in [0, 1] {
                let t = Tag::new(op, 0xdead_beef, 0x7f_fffe, dir);
                assert_eq!(Tag::decode(t.encode()), Some(t));
            }
        }
        assert_eq!(Tag::decode(0), None);
    }
}
