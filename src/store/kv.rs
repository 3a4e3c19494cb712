//! A key/value entry as the stores keep it: its flags and indexes in a fixed 24-byte header
//! (little-endian `u64`s), then the value's bytes as given. Values are opaque (anything up to
//! 512 KiB), so no text encoding is imposed on them.

/// One change to the key/value entries.
#[derive(Debug, Clone)]
pub enum KvOp {
    Put(KvRecord),
    Delete(String),
    /// Every key under a prefix (a recursive delete on a shared store, which decides which keys
    /// those are when it makes the change).
    DeletePrefix(String),
}

/// A check-and-set's condition: the entry's modify index is still `index` (0: it does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCondition {
    pub key: String,
    pub index: u64,
}

/// One key/value entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

const HEADER: usize = 24;

impl KvRecord {
    /// The stored form of everything but the key (the store's own key).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER + self.value.len());
        for n in [self.flags, self.create_index, self.modify_index] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        bytes.extend_from_slice(&self.value);
        bytes
    }

    /// Reads what [`encode`](Self::encode) wrote for `key`; an error names what is wrong.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "a key/value record of {} bytes, shorter than its header",
                bytes.len()
            ));
        }
        let number = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        Ok(Self {
            key: key.to_owned(),
            flags: number(0),
            create_index: number(8),
            modify_index: number(16),
            value: bytes[HEADER..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_a_short_one_is_refused() {
        let record = KvRecord {
            key: "config/db".into(),
            value: vec![0, 255, b'x'],
            flags: 42,
            create_index: 7,
            modify_index: 9,
        };
        assert_eq!(KvRecord::decode("config/db", &record.encode()), Ok(record));
        assert!(KvRecord::decode("k", &[1, 2, 3]).unwrap_err().contains("shorter"));
    }
}
