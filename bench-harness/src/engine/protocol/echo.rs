//! The tcp-echo workload on the wire: send the message, receive no more than
//! what is still owed of it (so bytes of the next echo are never taken for
//! this one), compare it byte for byte, complete when all of it is back. The
//! connection is always kept.

use socket2::Socket;

use super::{Protocol, Received, Step};
use crate::workload::EchoWorkload;

/// Largest receive buffer; longer messages come back in several receives.
const MAX_BUFFER: usize = 64 * 1024;

pub(crate) struct Echo {
    message: Vec<u8>,
}

impl Echo {
    pub fn new(w: &EchoWorkload) -> Echo {
        Echo {
            message: w.message(),
        }
    }
}

/// Bytes of the current message received back so far.
pub(crate) struct EchoState {
    got: usize,
}

impl Protocol for Echo {
    type State = EchoState;

    fn new_state(&self) -> EchoState {
        EchoState { got: 0 }
    }

    fn recv_buffer_size(&self) -> usize {
        self.message.len().clamp(1, MAX_BUFFER)
    }

    fn configure(&self, sock: &Socket) {
        let _ = sock.set_tcp_nodelay(true);
    }

    fn step(&self) -> Step<'_> {
        Step::Request(&self.message)
    }

    fn begin(&self, st: &mut EchoState) {
        st.got = 0;
    }

    fn room<'b>(&self, st: &EchoState, buf: &'b mut [u8]) -> &'b mut [u8] {
        let owed = self.message.len() - st.got;
        let len = buf.len().min(owed);
        &mut buf[..len]
    }

    fn received(&self, st: &mut EchoState, buf: &mut [u8], n: usize) -> Received {
        if buf[..n] != self.message[st.got..st.got + n] {
            return Received::Invalid;
        }
        st.got += n;
        if st.got == self.message.len() {
            Received::Complete {
                status: None,
                keep_alive: true,
            }
        } else {
            Received::Partial
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_only_what_is_owed_and_checks_it() {
        let p = Echo::new(&EchoWorkload { size: 100_000 });
        let mut buf = vec![0u8; p.recv_buffer_size()];
        assert_eq!(buf.len(), MAX_BUFFER);
        let mut st = p.new_state();
        p.begin(&mut st);
        let mut outcomes = Vec::new();
        while st.got < 100_000 {
            let start = st.got;
            let room = p.room(&st, &mut buf);
            let n = room.len();
            room.copy_from_slice(&p.message[start..start + n]);
            outcomes.push((n, p.received(&mut st, &mut buf, n)));
        }
        assert_eq!(
            outcomes,
            [
                (MAX_BUFFER, Received::Partial),
                (
                    100_000 - MAX_BUFFER,
                    Received::Complete {
                        status: None,
                        keep_alive: true
                    }
                )
            ]
        );
        p.begin(&mut st);
        buf[0] ^= 1;
        assert_eq!(p.received(&mut st, &mut buf, 1), Received::Invalid);
    }
}
