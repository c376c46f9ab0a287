//! TCP echo workload: each request is an N-byte message; it is complete when
//! the same N bytes have come back (checked byte for byte).

/// Echo settings.
#[derive(Debug, Clone)]
pub struct EchoWorkload {
    /// Message size in bytes.
    pub size: usize,
}

impl EchoWorkload {
    /// The message sent: a repeating, position-dependent pattern so that
    /// reordered or foreign bytes are detected.
    pub fn message(&self) -> Vec<u8> {
        (0..self.size).map(|i| (i % 251) as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_requested_size_and_pattern() {
        let m = EchoWorkload { size: 600 }.message();
        assert_eq!(m.len(), 600);
        assert_eq!(m[251], 0);
        assert_eq!(m[252], 1);
    }
}
