//! The shard's connection table: slots in fixed-size chunks, so growing it
//! never moves or copies the pairs already there and memory grows with the
//! connections actually opened (a doubling `Vec` would leave its old copies
//! to the allocator at every step).

use std::ops::{Index, IndexMut};

use super::pair::Pair;

/// Slots per chunk (about 60 KiB of pairs).
const CHUNK: usize = 256;

#[derive(Default)]
pub struct Slab {
    chunks: Vec<Vec<Pair>>,
    len: usize,
}

impl Slab {
    /// Slots in use or on the free list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends a slot; returns its index.
    pub fn push(&mut self, pair: Pair) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(pair);
        self.len += 1;
        self.len - 1
    }
}

impl Index<usize> for Slab {
    type Output = Pair;

    fn index(&self, slot: usize) -> &Pair {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }
}

impl IndexMut<usize> for Slab {
    fn index_mut(&mut self, slot: usize) -> &mut Pair {
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }
}
