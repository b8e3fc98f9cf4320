//! The one error type of decoding: what was wrong with the bytes.

/// A decoder was handed bytes that are not a valid structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: need {need} bytes, have {have}")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: wrong length {have} (expected {expected})")]
    Length {
        what: &'static str,
        have: usize,
        expected: String,
    },
    #[error("{what}: padding byte at offset {offset} is {value:#x}, not zero")]
    Padding {
        what: &'static str,
        offset: usize,
        value: u8,
    },
    #[error("{what}: field {field} has invalid value {value}")]
    Field {
        what: &'static str,
        field: &'static str,
        value: u64,
    },
}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// Fails unless every byte of `pad` is zero; `base` is its offset in the struct.
pub fn check_zero(what: &'static str, base: usize, pad: &[u8]) -> Result<()> {
    match pad.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(DecodeError::Padding {
            what,
            offset: base + i,
            value: pad[i],
        }),
    }
}

/// Fails unless `bytes` holds at least `need` bytes.
pub fn check_len(what: &'static str, bytes: &[u8], need: usize) -> Result<()> {
    if bytes.len() < need {
        return Err(DecodeError::Short {
            what,
            need,
            have: bytes.len(),
        });
    }
    Ok(())
}
