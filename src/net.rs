//! Socket set-up outside the ring: listening sockets with SO_REUSEPORT, one
//! per shard and listener, and the options every proxied socket gets.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending-connection queue length asked of every listening socket.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds one listening socket per shard on `addr`, all in one SO_REUSEPORT
/// group. When `addr` has port 0, the first socket picks a free port and the
/// others join it. Returns the fds and the address actually bound.
pub fn bind_reuseport_group(
    addr: SocketAddr,
    count: usize,
) -> io::Result<(Vec<RawFd>, SocketAddr)> {
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = match listening_socket(bound) {
            Ok(s) => s,
            Err(e) => {
                fds.into_iter().for_each(close_fd);
                return Err(e);
            }
        };
        bound = socket.local_addr()?.as_socket().unwrap_or(bound);
        fds.push(socket.into_raw_fd());
    }
    Ok((fds, bound))
}

fn listening_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// A non-blocking TCP socket for connecting to `addr`, with TCP_NODELAY.
pub fn server_socket(addr: &SocketAddr) -> io::Result<RawFd> {
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into_raw_fd())
}

/// Makes the next `close` of `fd` send an RST instead of a FIN, so an abort
/// on one side of a pair is seen as one on the other.
pub fn set_reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid, initialised struct of the size passed; a
    // failure (e.g. fd already dead) only means a FIN is sent instead.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Closes an fd this process owns and no operation still uses.
pub fn close_fd(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: callers pass fds they own with no operation in flight on them.
        unsafe {
            libc::close(fd);
        }
    }
}

/// The address of the peer connected to `fd` (getpeername(2)); `None` if
/// it is gone already.
pub fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: `fd` is an open socket owned by the caller for the whole call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&borrowed)
        .peer_addr()
        .ok()?
        .as_socket()
}

/// The local address of a connected socket (for a client: the address
/// it connected to).
pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: `fd` is an open socket owned by the caller for the whole call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&borrowed)
        .local_addr()
        .ok()?
        .as_socket()
}

/// A close-on-exec duplicate of `fd`.
pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd the caller holds open.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// The address of a listening TCP socket; an error if `fd` is anything
/// else (a socket handed over by another process is checked before use).
pub fn listening_tcp_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: `fd` is open for the whole call; the SockRef does not close it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let s = socket2::SockRef::from(&borrowed);
    if s.r#type()? != Type::STREAM || !s.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening stream socket",
        ));
    }
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}
