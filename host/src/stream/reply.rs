//! Replies of the generic client (`redis::Value`) parsed into entries,
//! moving the reply's buffers instead of copying them: the reference the
//! hot path's decoder (`wire`) is tested and benchmarked against.

use redis::Value;

use crate::vocab::entry::{Entry, Payload};

/// A reply that did not have the shape Redis documents for the command.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply shape for {command}: {detail}")]
pub struct ReplyError {
    command: &'static str,
    detail: String,
}

impl ReplyError {
    pub(crate) fn new(command: &'static str, detail: impl Into<String>) -> Self {
        Self {
            command,
            detail: detail.into(),
        }
    }
}

/// Decodes `XREADGROUP … STREAMS key id` (one stream). `Nil` means the BLOCK
/// timed out. Every entry gets `delivery_count`.
pub fn parse_xreadgroup(reply: Value, delivery_count: u32) -> Result<Vec<Entry>, ReplyError> {
    const CMD: &str = "XREADGROUP";
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => return Err(ReplyError::new(CMD, format!("{other:?}"))),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut pair) = stream else {
            return Err(ReplyError::new(CMD, "stream element is not an array"));
        };
        if pair.len() != 2 {
            return Err(ReplyError::new(CMD, "stream element is not [key, entries]"));
        }
        let entries = pair.pop().unwrap_or_default();
        out.extend(parse_entries(entries, delivery_count, CMD)?);
    }
    Ok(out)
}

/// Decodes a list of `[id, [field, value, …] | nil]` as returned by XRANGE,
/// XCLAIM and inside XREADGROUP replies.
pub fn parse_entries(
    reply: Value,
    delivery_count: u32,
    command: &'static str,
) -> Result<Vec<Entry>, ReplyError> {
    let items = match reply {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(ReplyError::new(command, format!("entries: {other:?}"))),
    };
    items
        .into_iter()
        .map(|item| parse_entry(item, delivery_count, command))
        .collect()
}

fn parse_entry(
    item: Value,
    delivery_count: u32,
    command: &'static str,
) -> Result<Entry, ReplyError> {
    let Value::Array(parts) = item else {
        return Err(ReplyError::new(command, "entry is not an array"));
    };
    let mut parts = parts.into_iter();
    let id = match parts.next() {
        Some(Value::BulkString(b)) => {
            String::from_utf8(b).map_err(|_| ReplyError::new(command, "non-UTF-8 id"))?
        }
        Some(Value::SimpleString(s)) => s,
        other => return Err(ReplyError::new(command, format!("entry id: {other:?}"))),
    };
    let payload = match parts.next() {
        None | Some(Value::Nil) => Payload::Trimmed,
        Some(Value::Array(flat)) => parse_fields(flat, command)?,
        Some(Value::Map(pairs)) => parse_fields(
            pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            command,
        )?,
        Some(other) => return Err(ReplyError::new(command, format!("entry fields: {other:?}"))),
    };
    Ok(Entry {
        id,
        payload,
        delivery_count,
    })
}

fn parse_fields(flat: Vec<Value>, command: &'static str) -> Result<Payload, ReplyError> {
    if !flat.len().is_multiple_of(2) {
        return Err(ReplyError::new(command, "odd number of field/value items"));
    }
    let mut raw = Vec::with_capacity(flat.len() / 2);
    let mut iter = flat.into_iter();
    while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
        raw.push((bytes(k, command)?, bytes(v, command)?));
    }
    if raw.iter().all(|(k, _)| std::str::from_utf8(k).is_ok()) {
        let fields = raw
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap_or_default(), v))
            .collect();
        Ok(Payload::Fields(fields))
    } else {
        Ok(Payload::Raw(raw))
    }
}

fn bytes(v: Value, command: &'static str) -> Result<Vec<u8>, ReplyError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(ReplyError::new(command, format!("field value: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::limits::FIELD_OVERHEAD;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn decodes_a_read_with_live_trimmed_and_binary_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"orders"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![bulk(b"type"), bulk(b"\xff\x00")]),
                ]),
                Value::Array(vec![bulk(b"2-0"), Value::Nil]),
                Value::Array(vec![
                    bulk(b"3-0"),
                    Value::Array(vec![bulk(b"\xfe"), bulk(b"v")]),
                ]),
            ]),
        ])]);
        let entries = parse_xreadgroup(reply, 1).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0].payload,
            Payload::Fields(vec![("type".into(), b"\xff\x00".to_vec())])
        );
        assert_eq!(entries[1].payload, Payload::Trimmed);
        assert_eq!(
            entries[2].payload,
            Payload::Raw(vec![(b"\xfe".to_vec(), b"v".to_vec())])
        );
        assert_eq!(entries[2].payload.cost(), 2 + FIELD_OVERHEAD);
    }

    #[test]
    fn block_timeout_is_an_empty_read() {
        assert!(parse_xreadgroup(Value::Nil, 1).unwrap().is_empty());
    }

    #[test]
    fn rejects_odd_field_lists() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"1-0"),
            Value::Array(vec![bulk(b"a")]),
        ])]);
        assert!(parse_entries(reply, 1, "XCLAIM").is_err());
    }
}
