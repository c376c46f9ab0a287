//! The shard's pool of pipes for splicing.
//!
//! Pipes count against `fs.pipe-user-pages-soft`; past it the kernel hands
//! out one-page pipes and throughput collapses. So a shard keeps at most a
//! configured number, lends one to a direction only while bytes sit in it
//! (polled splice) and refuses (the caller falls back to copying) rather than
//! use a shrunken pipe.

use std::os::fd::RawFd;

use crate::net::close_fd;

/// A pipe's two ends. Not `Clone`: one owner at a time (the pool or a
/// direction).
#[derive(Debug, PartialEq, Eq)]
pub struct Pipe {
    pub read: RawFd,
    pub write: RawFd,
}

pub struct PipePool {
    free: Vec<Pipe>,
    created: usize,
    max: usize,
    /// The capacity asked of every pipe.
    size: usize,
}

impl PipePool {
    pub fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            created: 0,
            max,
            size,
        }
    }

    /// The capacity of every pipe in the pool.
    pub fn pipe_size(&self) -> usize {
        self.size
    }

    /// Pipes that exist now (lent or free).
    pub fn created(&self) -> usize {
        self.created
    }

    /// An empty pipe of the pool's size, or `None` when the pool is at its
    /// limit or the kernel only gives shrunken pipes.
    pub fn acquire(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if self.created >= self.max {
            return None;
        }
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return None;
        }
        let pipe = Pipe {
            read: fds[0],
            write: fds[1],
        };
        // SAFETY: plain fcntl on an fd we just created.
        let size = unsafe { libc::fcntl(pipe.write, libc::F_GETPIPE_SZ) };
        // SAFETY: as above.
        if (size as usize) < self.size
            && unsafe { libc::fcntl(pipe.write, libc::F_SETPIPE_SZ, self.size as libc::c_int) }
                < self.size as i32
        {
            tracing::warn!(
                "pipes are limited by fs.pipe-user-pages-soft; splicing falls back to copying"
            );
            self.max = self.created;
            close_pipe(pipe);
            return None;
        }
        self.created += 1;
        Some(pipe)
    }

    /// Takes back a pipe; one that still holds bytes is closed instead.
    pub fn release(&mut self, pipe: Pipe, empty: bool) {
        if empty {
            self.free.push(pipe);
        } else {
            self.created -= 1;
            close_pipe(pipe);
        }
    }
}

fn close_pipe(p: Pipe) {
    close_fd(p.read);
    close_fd(p.write);
}

impl Drop for PipePool {
    fn drop(&mut self) {
        for p in self.free.drain(..) {
            close_pipe(p);
        }
    }
}
