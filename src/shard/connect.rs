//! Connecting a pair to a server: pick one, connect through the ring bounded
//! by the connect timeout (a linked timeout), and on failure redispatch to
//! another server up to the pool's `retries`.

use std::sync::atomic::Ordering;

use io_uring::opcode;
use io_uring::squeue::Flags;
use io_uring::types::Fd;

use super::conn::{ConnState, DOWN, UP};
use super::token::{Op, Token};
use super::Shard;
use crate::balance;
use crate::net::{close_fd, server_socket};

impl Shard {
    /// Picks a server for `slot` and submits the connect.
    pub(super) fn connect(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let pool = &self.pools.pools[c.pool];
        let Some(si) = balance::choose(self.balancers[c.pool].as_mut(), pool, c.tried) else {
            tracing::warn!(shard = self.id, pool = %pool.name, "no server can take a connection");
            self.counters.unserved += 1;
            self.abort(slot);
            return;
        };
        let server = &pool.servers[si];
        c.attempts += 1;
        let fd = match server_socket(&server.addr) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(shard = self.id, server = %server.name, "cannot create a socket: {e}");
                c.tried |= 1u64.checked_shl(si as u32).unwrap_or(0);
                self.after_failed_connect(slot);
                return;
            }
        };
        if self.forward == crate::config::ForwardMode::SpliceRing {
            // IORING_OP_SPLICE on a non-blocking socket would spin in io-wq.
            // SAFETY: fcntl on an fd we just created.
            unsafe {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        c.server = fd;
        c.server_index = Some(si);
        self.local_active[c.pool][si] += 1;
        server.live.active.fetch_add(1, Ordering::Relaxed);
        c.inflight += 2;
        let generation = c.generation;
        let connect = opcode::Connect::new(
            Fd(fd),
            server.sockaddr.as_ptr().cast(),
            server.sockaddr.len(),
        )
        .build()
        .flags(Flags::IO_LINK)
        .user_data(Token::new(Op::Connect, slot as u32, generation, 0).encode());
        let timeout = opcode::LinkTimeout::new(&*self.connect_timeout)
            .build()
            .user_data(Token::new(Op::ConnectTimeout, slot as u32, generation, 0).encode());
        // SAFETY: the sockaddr lives in the pools snapshot, which the shard
        // holds (Arc) for its whole life; the timespec is boxed in the shard.
        unsafe { self.push_all(&[connect, timeout]) };
    }

    pub(super) fn on_connect(&mut self, slot: usize, result: i32) {
        let c = &mut self.conns[slot];
        debug_assert_eq!(c.state, ConnState::Connecting);
        let si = c.server_index.expect("connecting without a server");
        let server = &self.pools.pools[c.pool].servers[si];
        if result == 0 {
            server.live.connections.fetch_add(1, Ordering::Relaxed);
            c.state = ConnState::Forwarding;
            c.server_seen = self.now;
            c.client_seen = self.now;
            self.start_dir(slot, UP);
            self.start_dir(slot, DOWN);
            return;
        }
        server.live.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.counters.connect_failures += 1;
        let why = if result == -libc::ECANCELED {
            "connect timeout".to_string()
        } else {
            std::io::Error::from_raw_os_error(-result).to_string()
        };
        tracing::debug!(shard = self.id, server = %server.name, addr = %server.addr, "connect failed: {why}");
        c.tried |= 1u64.checked_shl(si as u32).unwrap_or(0);
        close_fd(c.server);
        c.server = -1;
        self.release_server(slot);
        self.after_failed_connect(slot);
    }

    /// Redispatches to another server, or gives up on the client.
    fn after_failed_connect(&mut self, slot: usize) {
        let c = &self.conns[slot];
        let retries = self.pools.pools[c.pool].retries;
        if c.attempts <= retries {
            self.counters.redispatches += 1;
            self.connect(slot);
        } else {
            tracing::warn!(
                shard = self.id,
                pool = %self.pools.pools[c.pool].name,
                attempts = c.attempts,
                "no server reachable; closing the client"
            );
            self.counters.unserved += 1;
            self.abort(slot);
        }
    }

    /// Takes the pair off its server's counts.
    pub(super) fn release_server(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if let Some(si) = c.server_index.take() {
            self.local_active[c.pool][si] -= 1;
            self.pools.pools[c.pool].servers[si]
                .live
                .active
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}
