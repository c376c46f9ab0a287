//! How a resolved configuration reads: what `ringlb check` prints.

use std::fmt;

use super::Config;

impl fmt::Display for Config {
    /// The resolved configuration, as `ringlb check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rt = &self.runtime;
        writeln!(
            f,
            "runtime: {} shard(s), cpus {:?}, forward {}, {} buffers of {} bytes, up to {} pipes of {} bytes per shard",
            rt.shards, rt.cpus, rt.forward, rt.buffers, rt.buffer_size, rt.pipes, rt.pipe_size
        )?;
        match rt.maxconn {
            Some(n) => writeln!(f, "maxconn {n}")?,
            None => writeln!(f, "maxconn auto (from RLIMIT_NOFILE)")?,
        }
        let t = &self.timeouts;
        writeln!(
            f,
            "timeouts: connect {:?}, client_idle {:?}, server_idle {:?}",
            t.connect, t.client_idle, t.server_idle
        )?;
        for l in &self.listeners {
            writeln!(
                f,
                "listener {} on {} -> pool {}",
                l.name, l.bind, self.pools[l.pool].name
            )?;
        }
        for p in &self.pools {
            writeln!(
                f,
                "pool {}: balance {}, retries {}",
                p.name,
                p.balance.as_str(),
                p.retries
            )?;
            for s in &p.servers {
                writeln!(
                    f,
                    "  server {} {} weight {}{}",
                    s.name,
                    s.addr,
                    s.weight,
                    if s.backup { " backup" } else { "" }
                )?;
            }
        }
        Ok(())
    }
}
