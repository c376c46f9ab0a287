//! Zero-downtime binary upgrade over the control socket (`[runtime]
//! control_socket`, a unix SOCK_SEQPACKET socket, mode 0600).
//!
//! The running process serves the socket on one thread. A new binary
//! started with `ringlb run --upgrade` connects and:
//!
//! 1. asks for the listening sockets (`listeners`): the answer names each
//!    listener (name, configured and bound address, socket count), then one
//!    message per listener carries its sockets (SCM_RIGHTS): the very
//!    sockets the old shards accept on, with their accept queues;
//! 2. starts its shards on them (`Runtime::start_with`): both processes
//!    now accept from the same queues, so no connection waits on a closed
//!    socket;
//! 3. takes the control socket's path (binds a fresh socket and renames it
//!    over the path, atomically);
//! 4. asks the old process to `drain`: it stops its admin API, stops
//!    accepting, lets its connections finish within `grace`, and exits 0.
//!
//! Anything that fails before step 4 leaves the old process serving as
//! before: it only drains when asked to. Only a peer of the same user (or
//! root) is answered (`SO_PEERCRED`).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

use super::Control;
use crate::config::ControlSocket as ControlSocketConfig;
use crate::runtime::InheritedListener;

/// The protocol both sides must speak.
pub const VERSION: u32 = 1;

/// How long either side waits for the other's next message.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// The most fds one message carries (the kernel's SCM_MAX_FD).
const MAX_FDS: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("control socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {}: another ringlb is running and holds it; start this one with --upgrade to take over from it, or give it another runtime.control_socket", path.display())]
    InUse { path: PathBuf },
    #[error("--upgrade: no running ringlb answers on {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--upgrade needs runtime.control_socket (it is set to \"\")")]
    Off,
    #[error("the running ringlb refused the upgrade: {0}")]
    Refused(String),
    #[error("upgrade: {0}")]
    Protocol(String),
    #[error("upgrade: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Listeners { version: u32, pid: u32 },
    Drain,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    pid: u32,
    #[serde(default)]
    listeners: Vec<ListenerInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ListenerInfo {
    name: String,
    bind: SocketAddr,
    addr: SocketAddr,
    sockets: usize,
}

fn io_err(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err)
}

fn set_timeouts(fd: &impl AsFd) -> std::io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(PEER_TIMEOUT.as_secs() as _, 0);
    socket::setsockopt(fd, sockopt::ReceiveTimeout, &tv).map_err(io_err)?;
    socket::setsockopt(fd, sockopt::SendTimeout, &tv).map_err(io_err)
}

/// Sends one message, with `fds` attached.
fn send(fd: &impl AsFd, msg: &impl Serialize, fds: &[RawFd]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    socket::sendmsg::<()>(
        fd.as_fd().as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io_err)?;
    Ok(())
}

/// Receives one message and the fds it carries; `None` at end of stream.
fn recv<T: for<'de> Deserialize<'de>>(
    fd: &impl AsFd,
) -> Result<Option<(T, Vec<OwnedFd>)>, UpgradeError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = socket::recvmsg::<()>(
        fd.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io_err)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io_err)? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel just installed these fds in this process;
            // nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(UpgradeError::Protocol("a message was truncated".into()));
    }
    let n = msg.bytes;
    if n == 0 {
        return Ok(None);
    }
    let value = serde_json::from_slice(&buf[..n])
        .map_err(|e| UpgradeError::Protocol(format!("unreadable message: {e}")))?;
    Ok(Some((value, fds)))
}

/// The new process's side: the connection to the old one, between taking
/// its sockets and telling it to drain.
pub struct Takeover {
    conn: OwnedFd,
    /// The process being replaced.
    pub old_pid: u32,
}

/// Connects to the ringlb serving `config`'s control socket and takes
/// its listening sockets.
pub fn take_over(
    config: &ControlSocketConfig,
) -> Result<(Takeover, Vec<InheritedListener>), UpgradeError> {
    let path = config.path().ok_or(UpgradeError::Off)?;
    let conn = seqpacket()?;
    let addr = UnixAddr::new(path).map_err(io_err)?;
    socket::connect(conn.as_raw_fd(), &addr).map_err(|e| UpgradeError::Connect {
        path: path.to_path_buf(),
        source: io_err(e),
    })?;
    set_timeouts(&conn)?;
    send(
        &conn,
        &Request::Listeners {
            version: VERSION,
            pid: std::process::id(),
        },
        &[],
    )?;
    let (reply, _) = recv::<Reply>(&conn)?
        .ok_or_else(|| UpgradeError::Protocol("the running ringlb hung up".into()))?;
    if !reply.ok {
        return Err(UpgradeError::Refused(reply.error.unwrap_or_default()));
    }
    let mut inherited = Vec::new();
    for l in reply.listeners {
        // One message per listener, or more past the kernel's limit of
        // fds per message.
        let mut fds = Vec::new();
        while fds.len() < l.sockets {
            let (_, more) = recv::<serde_json::Value>(&conn)?.ok_or_else(|| {
                UpgradeError::Protocol(format!("no sockets came for listener `{}`", l.name))
            })?;
            if more.is_empty() {
                break;
            }
            fds.extend(more);
        }
        if fds.len() != l.sockets {
            return Err(UpgradeError::Protocol(format!(
                "listener `{}`: {} sockets announced, {} received",
                l.name,
                l.sockets,
                fds.len()
            )));
        }
        inherited.push(InheritedListener {
            name: l.name,
            bind: l.bind,
            addr: l.addr,
            fds,
        });
    }
    Ok((
        Takeover {
            conn,
            old_pid: reply.pid,
        },
        inherited,
    ))
}

impl Takeover {
    /// Tells the old process to drain and exit (this one now serves).
    pub fn finish(self) -> Result<(), UpgradeError> {
        send(&self.conn, &Request::Drain, &[])?;
        match recv::<Reply>(&self.conn)? {
            Some((r, _)) if r.ok => Ok(()),
            Some((r, _)) => Err(UpgradeError::Refused(r.error.unwrap_or_default())),
            None => Err(UpgradeError::Protocol(
                "the old process hung up before confirming the drain".into(),
            )),
        }
    }
}

/// The control socket a running process serves.
pub struct ControlSocket {
    path: PathBuf,
    listen: Arc<OwnedFd>,
    /// The peer being served, so that stopping can cut it short.
    peer: Arc<Mutex<Option<OwnedFd>>>,
    /// (device, inode) of the socket file this process created: it removes
    /// the path at exit only if the path is still its own.
    ident: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn socket_err(path: &Path) -> impl Fn(std::io::Error) -> UpgradeError + '_ {
    move |source| UpgradeError::Socket {
        path: path.to_path_buf(),
        source,
    }
}

impl ControlSocket {
    /// Creates the socket named by `config` and serves it on a thread.
    /// `taking_over`: this process replaces the one that holds the path
    /// (`--upgrade`). `handed_over` is set once a new process has taken
    /// over and this one must drain. `Ok(None)`: no control socket (off,
    /// or the default path is not available: logged).
    pub fn open(
        config: &ControlSocketConfig,
        taking_over: bool,
        control: Arc<Control>,
        handed_over: Arc<AtomicBool>,
    ) -> Result<Option<ControlSocket>, UpgradeError> {
        let (path, default) = match config {
            ControlSocketConfig::Off => return Ok(None),
            ControlSocketConfig::Default(p) => (p.as_path(), true),
            ControlSocketConfig::Configured(p) => (p.as_path(), false),
        };
        match Self::bind(path, taking_over) {
            Ok((listen, ident)) => {
                let listen = Arc::new(listen);
                let stop = Arc::new(AtomicBool::new(false));
                let peer = Arc::new(Mutex::new(None));
                let thread = {
                    let (listen, stop, peer) = (listen.clone(), stop.clone(), peer.clone());
                    std::thread::Builder::new()
                        .name("ringlb-control".into())
                        .spawn(move || serve(&listen, &stop, &peer, &control, &handed_over))?
                };
                tracing::info!(path = %path.display(), "control socket (binary upgrade) ready");
                Ok(Some(ControlSocket {
                    path: path.to_path_buf(),
                    listen,
                    peer,
                    ident,
                    stop,
                    thread: Some(thread),
                }))
            }
            Err(e) if default => {
                tracing::warn!("{e}; binary upgrade is off for this process");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Binds a socket at a temporary name beside `path` and renames it over
    /// `path`, so the path never names nothing (or a half-made socket).
    fn bind(path: &Path, taking_over: bool) -> Result<(OwnedFd, (u64, u64)), UpgradeError> {
        let err = socket_err(path);
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(&err)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(&err)?;
            }
        }
        if !taking_over && path.exists() {
            // A live socket belongs to a running ringlb; a dead one is
            // left over from a crash and replaced.
            let probe = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .map_err(|e| err(io_err(e)))?;
            let addr = UnixAddr::new(path).map_err(|e| err(io_err(e)))?;
            match socket::connect(probe.as_raw_fd(), &addr) {
                // Answering, or busy (its backlog full): alive.
                Ok(()) | Err(nix::Error::EAGAIN) => {
                    return Err(UpgradeError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(nix::Error::ECONNREFUSED | nix::Error::ENOENT) => {}
                Err(e) => return Err(err(io_err(e))),
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = path.with_file_name(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let fd = seqpacket().map_err(&err)?;
        let addr = UnixAddr::new(&temp).map_err(|e| err(io_err(e)))?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(|e| err(io_err(e)))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| {
                socket::listen(&fd, Backlog::new(8).unwrap_or(Backlog::MAXCONN)).map_err(io_err)
            })
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            return Err(err(e));
        }
        let meta = std::fs::metadata(path).map_err(&err)?;
        Ok((fd, (meta.dev(), meta.ino())))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving; removes the path unless another process has taken
    /// it since.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the thread's accept (EINVAL on a shut-down listener), or
        // its wait for a peer's next message.
        let _ = socket::shutdown(self.listen.as_raw_fd(), socket::Shutdown::Both);
        if let Some(peer) = self.peer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = socket::shutdown(peer.as_raw_fd(), socket::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The control socket's thread: one peer at a time, until a new process
/// has taken over or the socket is stopped.
fn serve(
    listen: &OwnedFd,
    stop: &AtomicBool,
    peer: &Mutex<Option<OwnedFd>>,
    control: &Control,
    handed_over: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let conn = match socket::accept4(listen.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(nix::Error::EINTR | nix::Error::ECONNABORTED) => continue,
            Err(
                nix::Error::EMFILE | nix::Error::ENFILE | nix::Error::ENOBUFS | nix::Error::ENOMEM,
            ) => {
                // Out of fds for now: the data path has them all.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                if !stop.load(Ordering::Acquire) {
                    tracing::error!("control socket: accept failed: {e}; binary upgrade is off");
                }
                return;
            }
        };
        // Kept where `stop` can shut it down; closed under the lock.
        let fd = conn.as_raw_fd();
        *peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        if stop.load(Ordering::Acquire) {
            peer.lock().unwrap_or_else(|e| e.into_inner()).take();
            return;
        }
        // SAFETY: `fd` is the connection just stored in `peer`, which only
        // this thread takes out (and closes), below.
        let conn = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let result = answer(conn, control);
        peer.lock().unwrap_or_else(|e| e.into_inner()).take();
        match result {
            Ok(Some(pid)) => {
                tracing::info!(
                    new_pid = pid,
                    "binary upgrade: the new process serves the listeners; draining and exiting"
                );
                handed_over.store(true, Ordering::Release);
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("control socket: {e}; still serving"),
        }
    }
}

/// Serves one peer. Returns its pid once it has taken over and asked this
/// process to drain.
fn answer(conn: BorrowedFd<'_>, control: &Control) -> Result<Option<u32>, UpgradeError> {
    let conn = &conn;
    set_timeouts(conn)?;
    let me = std::process::id();
    let refuse = |error: String| Reply {
        ok: false,
        error: Some(error),
        pid: me,
        listeners: Vec::new(),
    };
    let cred = socket::getsockopt(conn, sockopt::PeerCredentials).map_err(io_err)?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    // The kernel's word for who is asking, not the message's.
    let pid = cred.pid() as u32;
    if cred.uid() != euid && cred.uid() != 0 {
        let why = format!(
            "uid {} may not take over a process of uid {euid}",
            cred.uid()
        );
        let _ = send(conn, &refuse(why.clone()), &[]);
        return Err(UpgradeError::Refused(why));
    }
    let Some((request, _)) = recv::<Request>(conn)? else {
        return Ok(None);
    };
    let Request::Listeners { version, .. } = request else {
        let _ = send(conn, &refuse("ask for the listeners first".into()), &[]);
        return Ok(None);
    };
    if version != VERSION {
        let why = format!("protocol version {version}; this process speaks {VERSION}");
        let _ = send(conn, &refuse(why.clone()), &[]);
        return Err(UpgradeError::Refused(why));
    }
    let listeners = {
        let rt = control.lock();
        if rt.stopping() {
            let _ = send(conn, &refuse("this process is stopping".into()), &[]);
            return Ok(None);
        }
        rt.listeners().to_vec()
    };
    tracing::info!(
        new_pid = pid,
        listeners = listeners.len(),
        "binary upgrade: handing the listening sockets over"
    );
    let reply = Reply {
        ok: true,
        error: None,
        pid: me,
        listeners: listeners
            .iter()
            .map(|l| ListenerInfo {
                name: l.name.clone(),
                bind: l.bind,
                addr: l.addr,
                sockets: l.sockets.len(),
            })
            .collect(),
    };
    send(conn, &reply, &[])?;
    for l in &listeners {
        let fds: Vec<RawFd> = l.sockets.iter().map(|f| f.as_raw_fd()).collect();
        for chunk in fds.chunks(MAX_FDS) {
            send(conn, &serde_json::json!({ "listener": l.name }), chunk)?;
        }
    }
    match recv::<Request>(conn) {
        Ok(Some((Request::Drain, _))) => {
            // Refused if this process started stopping meanwhile (it would
            // keep the admin address until it has drained), or a reload
            // changed its listeners (sockets bound since were not handed
            // over, and would reset their queued clients at exit).
            let changed = {
                let rt = control.lock();
                if rt.stopping() {
                    Some("this process started stopping during the upgrade")
                } else if rt
                    .listeners()
                    .iter()
                    .map(|l| l.id)
                    .ne(listeners.iter().map(|l| l.id))
                {
                    Some("a reload changed the listeners during the upgrade; start the upgrade again")
                } else {
                    None
                }
            };
            if let Some(why) = changed {
                let _ = send(conn, &refuse(why.into()), &[]);
                return Err(UpgradeError::Refused(why.into()));
            }
            send(
                conn,
                &Reply {
                    ok: true,
                    error: None,
                    pid: me,
                    listeners: Vec::new(),
                },
                &[],
            )?;
            Ok(Some(pid))
        }
        Ok(_) => {
            tracing::warn!(
                new_pid = pid,
                "binary upgrade abandoned by the new process; still serving"
            );
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(
                new_pid = pid,
                "binary upgrade abandoned ({e}); still serving"
            );
            Ok(None)
        }
    }
}
