//! The io_uring pieces that ringlb's shards and ringlb-bench's load threads
//! share:
//!
//! - [`setup`]: creating a ring with the best flags the kernel accepts, and a
//!   clear error when io_uring is not available at all.
//! - [`ring`]: one thread's ring: pushing submissions without ever dropping
//!   or spinning on completions, and draining them in order.
//! - [`ops`]: submissions the io-uring crate cannot express yet (a multishot
//!   receive with a byte limit) and probes for them.
//! - [`token`]: the `user_data` codec (operation, direction, generation, slot).

pub mod ops;
pub mod ring;
pub mod setup;
pub mod token;

pub use ring::{Completion, Ring};
pub use setup::{probe, RingError, RingFlags};
pub use token::Token;
