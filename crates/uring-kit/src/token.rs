//! The `user_data` of every submission: which operation, on which slot, of
//! which generation, for which direction.
//!
//! Layout (64 bits): `op:8 | dir:1 | generation:23 | slot:32`. A slot's
//! generation changes each time the slot is reused, so a completion that
//! arrives for an earlier occupant is recognised as stale. Operation code 0
//! is never produced by [`Token::encode`] for a real operation, so a zeroed
//! `user_data` decodes as "unknown".

/// Generations wrap at 2^23.
pub const GEN_MASK: u32 = (1 << 23) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The caller's operation code (its own enum, as a byte).
    pub op: u8,
    /// A one-bit direction (0 or 1).
    pub dir: u8,
    pub generation: u32,
    pub slot: u32,
}

impl Token {
    pub fn new(op: u8, slot: u32, generation: u32, dir: u8) -> Token {
        Token {
            op,
            dir: dir & 1,
            generation: generation & GEN_MASK,
            slot,
        }
    }

    pub fn encode(self) -> u64 {
        u64::from(self.op) << 56
            | u64::from(self.dir & 1) << 55
            | u64::from(self.generation & GEN_MASK) << 32
            | u64::from(self.slot)
    }

    pub fn decode(v: u64) -> Token {
        Token {
            op: (v >> 56) as u8,
            dir: ((v >> 55) & 1) as u8,
            generation: ((v >> 32) as u32) & GEN_MASK,
            slot: v as u32,
        }
    }
}

/// The generation that follows `g`.
pub fn next_generation(g: u32) -> u32 {
    (g + 1) & GEN_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for op in [1u8, 7, 255] {
            for dir in [0, 1] {
                for (slot, generation) in [(0, 0), (0xdead_beef, 0x7f_fffe), (u32::MAX, GEN_MASK)] {
                    let t = Token::new(op, slot, generation, dir);
                    assert_eq!(Token::decode(t.encode()), t);
                }
            }
        }
        assert_eq!(Token::decode(0).op, 0);
    }

    #[test]
    fn generations_wrap_inside_the_mask() {
        assert_eq!(next_generation(GEN_MASK), 0);
        assert_eq!(Token::new(1, 0, GEN_MASK + 5, 0).generation, 4);
    }
}
