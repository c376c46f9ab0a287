//! The `user_data` of every submission: which operation, on which connection
//! slot, of which generation, for which direction.
//!
//! Layout (64 bits): `op:8 | dir:1 | generation:23 | slot:32`. A slot's
//! generation is bumped each time it is freed, so a completion that arrives
//! for an earlier occupant is recognised as stale.

/// What a submission was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept; `slot` is the listener index.
    Accept = 1,
    /// The shard's periodic timer (idle timeouts, paused accepts, drain).
    Tick = 2,
    /// A read of the command eventfd.
    Command = 3,
    Connect = 4,
    ConnectTimeout = 5,
    Recv = 6,
    Send = 7,
    PollIn = 8,
    PollOut = 9,
    SpliceIn = 10,
    SpliceOut = 11,
    Cancel = 13,
    /// Fire-and-forget (closes); the completion is dropped.
    Ignore = 14,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Accept,
            2 => Tick,
            3 => Command,
            4 => Connect,
            5 => ConnectTimeout,
            6 => Recv,
            7 => Send,
            8 => PollIn,
            9 => PollOut,
            10 => SpliceIn,
            11 => SpliceOut,
            13 => Cancel,
            14 => Ignore,
            _ => return None,
        })
    }
}

pub const GEN_MASK: u32 = (1 << 23) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    /// Direction: 0 client → server, 1 server → client.
    pub dir: usize,
    pub generation: u32,
    pub slot: u32,
}

impl Token {
    pub fn new(op: Op, slot: u32, generation: u32, dir: usize) -> Token {
        Token {
            op,
            dir,
            generation: generation & GEN_MASK,
            slot,
        }
    }

    pub fn encode(self) -> u64 {
        (self.op as u64) << 56
            | (self.dir as u64 & 1) << 55
            | u64::from(self.generation & GEN_MASK) << 32
            | u64::from(self.slot)
    }

    pub fn decode(v: u64) -> Option<Token> {
        Some(Token {
            op: Op::from_u8((v >> 56) as u8)?,
            dir: ((v >> 55) & 1) as usize,
            generation: ((v >> 32) as u32) & GEN_MASK,
            slot: v as u32,
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
                let t = Token::new(op, 0xdead_beef, 0x7f_fffe, dir);
                assert_eq!(Token::decode(t.encode()), Some(t));
            }
        }
        assert_eq!(Token::decode(0), None);
    }
}
