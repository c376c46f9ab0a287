//! The PROXY protocol on the data path (`crate::proxy_protocol` parses and
//! builds the headers).
//!
//! Reading (`accept_proxy`): a client of such a listener gets a pair in
//! [`PairState::ProxyHeader`] and a one-shot readiness poll. When it is
//! readable the shard peeks at its first bytes (`MSG_PEEK`, so nothing past
//! the header is ever taken) and parses them: a complete header is then
//! read off exactly, its source address becomes the client's (for access
//! lists, hashing, stickiness and the log) and the pair goes on as any new
//! client; for an incomplete one the socket's receive low-water mark is
//! raised past the bytes already there, so the next poll answers only when
//! more arrive (and the mark goes back to 1 once the header is read); a
//! malformed one, a
//! client that closes, or one still without a whole header after
//! `timeouts.proxy_header` is closed with a reset and counted in its
//! listener's `proxy_errors`, as is a peer outside `proxy_trusted` (checked
//! before anything is read).
//!
//! Writing (`send_proxy`): once the connect to a server succeeds, the
//! header goes out with one `send(2)` before any client byte: the socket's
//! send buffer is empty then, so it is taken whole.

use std::os::fd::RawFd;

use io_uring::opcode;
use io_uring::types::Fd;

use super::accept::Admission;
use super::log_limit::LogKind;
use super::pair::PairState;
use super::token::{Op, Tag};
use super::Shard;
use crate::access_log::Cause;
use crate::config::SendProxy;
use crate::net::{local_addr, peer_addr};
use crate::proxy_protocol::{self, Header, Parsed, V2_MAX};

/// `recv(2)` into `buf` without waiting; `flags` adds `MSG_PEEK`.
fn recv_now(fd: RawFd, buf: &mut [u8], flags: i32) -> isize {
    // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`, which
    // lives for the call.
    unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    }
}

/// Sets the socket's receive low-water mark (TCP's poll honours it).
fn set_rcvlowat(fd: RawFd, bytes: i32) -> bool {
    // SAFETY: setsockopt(2) reads one int from a live local.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

impl Shard {
    /// A client accepted on an `accept_proxy` listener: checked against
    /// `proxy_trusted`, then given a pair that waits for its header.
    pub(super) fn await_proxy_header(&mut self, l: usize, fd: RawFd) {
        if let Some(trusted) = &self.listeners[l].proxy_trusted {
            // A peer already gone counts the same: nothing to serve.
            let ok = peer_addr(fd).is_some_and(|a| trusted.allows(a.ip()));
            if !ok {
                self.listeners[l].counts.proxy_errors += 1;
                self.listener_counts_changed = true;
                if self.log.admit(LogKind::ProxyHeader, self.now) {
                    tracing::warn!(
                        shard = self.id,
                        listener = %self.listeners[l].name,
                        "a PROXY header from a peer outside proxy_trusted: connection closed"
                    );
                }
                self.arm_log_summary();
                self.refuse_fresh(l, fd);
                return;
            }
        }
        let slot = self.new_pair(l, fd);
        self.pairs[slot].state = PairState::ProxyHeader;
        self.hold_budget(slot);
        let at = self.now + self.timeouts.proxy_header;
        self.arm_idle(slot, at);
        self.poll_proxy_header(slot);
    }

    fn poll_proxy_header(&mut self, slot: usize) {
        let p = &mut self.pairs[slot];
        p.inflight += 1;
        // POLLRDHUP: a client that half-closes after part of a header is
        // readable for good, whatever the low-water mark says.
        let entry = opcode::PollAdd::new(Fd(p.client), (libc::POLLIN | libc::POLLRDHUP) as u32)
            .build()
            .user_data(Tag::new(Op::ProxyPoll, slot as u32, p.generation, 0).encode());
        // SAFETY: no pointers.
        unsafe { self.push(&[entry]) };
    }

    /// The client of `slot` is readable (or its poll failed): reads its
    /// header if it is all there.
    pub(super) fn on_proxy_readable(&mut self, slot: usize, result: i32) {
        if self.pairs[slot].state != PairState::ProxyHeader {
            return;
        }
        if result < 0 {
            self.proxy_header_failed(slot, Cause::Client, "the client's socket failed");
            return;
        }
        let fd = self.pairs[slot].client;
        let mut buf = [0u8; V2_MAX];
        let n = recv_now(fd, &mut buf, libc::MSG_PEEK);
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => self.poll_proxy_header(slot),
                _ => self.proxy_header_failed(slot, Cause::Client, "the client's socket failed"),
            }
            return;
        }
        if n == 0 {
            self.proxy_header_failed(
                slot,
                Cause::Client,
                "the client closed before its PROXY header",
            );
            return;
        }
        match proxy_protocol::parse(&buf[..n as usize]) {
            Ok(Parsed::Incomplete) => {
                if result & (libc::POLLRDHUP | libc::POLLHUP) as i32 != 0 {
                    self.proxy_header_failed(
                        slot,
                        Cause::Client,
                        "the client closed before its PROXY header",
                    );
                    return;
                }
                // Wake up only when more than what is there has come.
                if set_rcvlowat(fd, n as i32 + 1) {
                    self.pairs[slot].lowat_raised = true;
                    self.poll_proxy_header(slot);
                } else {
                    self.proxy_header_failed(slot, Cause::Client, "the client's socket failed");
                }
            }
            Ok(Parsed::Complete { len, header }) => {
                // Exactly the header: the bytes after it are the client's.
                if recv_now(fd, &mut buf[..len], 0) != len as isize
                    || (self.pairs[slot].lowat_raised && !set_rcvlowat(fd, 1))
                {
                    self.proxy_header_failed(slot, Cause::Client, "the client's socket failed");
                    return;
                }
                self.proxy_header_read(slot, header);
            }
            Err(e) => {
                if self.log.admit(LogKind::ProxyHeader, self.now) {
                    let l = self.pairs[slot].listener as usize;
                    tracing::warn!(
                        shard = self.id,
                        listener = %self.listeners[l].name,
                        "{e}: connection closed"
                    );
                }
                self.arm_log_summary();
                self.proxy_header_failed(slot, Cause::Proxy, "");
            }
        }
    }

    /// A whole header was read: the client is who it says, and goes on
    /// (through the listener's access list, when it has one).
    fn proxy_header_read(&mut self, slot: usize, header: Header) {
        let p = &mut self.pairs[slot];
        match header {
            Header::Proxied { src, dst } => {
                p.client_addr = Some(src);
                p.client_dst = Some(dst);
            }
            Header::Local => p.client_addr = peer_addr(p.client),
        }
        p.client_seen = self.now;
        let l = p.listener as usize;
        let Some(addr) = p.client_addr else {
            self.proxy_header_failed(slot, Cause::Client, "the client's address cannot be read");
            return;
        };
        if let Some(key) = self.pairs[slot].timer.take() {
            self.timers.cancel(key);
        }
        match self.admission(l, addr.ip()) {
            Admission::Admit(src) => {
                self.pairs[slot].src_slots = src;
                self.release_shaped(slot);
            }
            Admission::Delay(us, src) => {
                self.pairs[slot].src_slots = src;
                self.shape(slot, us);
            }
            Admission::Wait(key, src) => {
                self.pairs[slot].src_slots = src;
                self.await_lease(slot, key);
            }
            Admission::Denied | Admission::Limited | Admission::TooMany => {
                self.abort(slot, Cause::Proxy)
            }
        }
    }

    /// No whole header within `timeouts.proxy_header`.
    pub(super) fn proxy_header_timeout(&mut self, slot: usize) {
        self.proxy_header_failed(slot, Cause::ClientTimeout, "no PROXY header in time");
    }

    fn proxy_header_failed(&mut self, slot: usize, cause: Cause, why: &str) {
        let l = self.pairs[slot].listener as usize;
        self.listeners[l].counts.proxy_errors += 1;
        self.listener_counts_changed = true;
        if !why.is_empty() {
            tracing::debug!(shard = self.id, slot, "{why}: connection closed");
        }
        self.abort(slot, cause);
    }

    /// Sends the PROXY header of `version` to the server of `slot`, just
    /// connected. False: it could not be sent whole (the pair is then
    /// aborted by the caller).
    #[inline(never)]
    pub(super) fn send_proxy_header(
        &mut self,
        slot: usize,
        version: SendProxy,
        unique_id: bool,
    ) -> bool {
        let p = &mut self.pairs[slot];
        if p.client_addr.is_none() {
            p.client_addr = peer_addr(p.client);
        }
        if p.client_dst.is_none() {
            p.client_dst = local_addr(p.client);
        }
        let addrs = p.client_addr.zip(p.client_dst);
        let (server, shard) = (p.server, self.id);
        self.proxy_seq += 1;
        let mut out = std::mem::take(&mut self.proxy_out);
        out.clear();
        match (version, addrs) {
            // The client's address could not be read (it is gone): the
            // header says so, as the specification provides.
            (SendProxy::V1, None) => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
            (SendProxy::V2, None) => proxy_protocol::write_v2_local(&mut out),
            (SendProxy::V1, Some((src, dst))) => proxy_protocol::write_v1(&mut out, src, dst),
            (SendProxy::V2, Some((src, dst))) => {
                let id = unique_id
                    .then(|| format!("{:016x}{shard:04x}{:012x}", self.proxy_boot, self.proxy_seq));
                proxy_protocol::write_v2(&mut out, src, dst, id.as_deref().map(str::as_bytes));
            }
            (SendProxy::Off, _) => {}
        }
        // SAFETY: send(2) reads `out.len()` bytes of `out`, alive for the call.
        let n = unsafe {
            libc::send(
                server,
                out.as_ptr().cast(),
                out.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        let sent = n == out.len() as isize;
        self.proxy_out = out;
        sent
    }
}
