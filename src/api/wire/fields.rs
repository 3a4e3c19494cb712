//! Reading Consul's JSON objects: a body decoded with no field given twice, fields found the way
//! Consul's decoder finds them (any casing, underscores ignored), and every field the client sent
//! accounted for, so that a misspelt one is an error rather than silently nothing.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::api::error::ApiError;
use crate::model::{MAX_DURATION, parse_go_duration};

/// Decodes a request body into JSON, with Consul's wording for a body that is not JSON. An object
/// that names a field twice is refused, whether exactly or in another casing: Consul's decoder
/// would take both as one field, and which one wins is not something a client should rely on.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("Request decode failed: empty body".into()));
    }
    let mut decoder = serde_json::Deserializer::from_slice(body);
    let value = NoDuplicates
        .deserialize(&mut decoder)
        .and_then(|value| decoder.end().map(|()| value))
        .map_err(|e| ApiError::BadRequest(format!("Request decode failed: {e}")))?;
    Ok(value)
}

/// Builds a `serde_json::Value` as serde_json does, refusing duplicate object keys (serde_json
/// keeps the last silently, and has no option to refuse them).
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NoDuplicates)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(fold(&key)) {
                return Err(A::Error::custom(format!(
                    "field `{key}` is given twice (field names match without regard to case or underscores)"
                )));
            }
            let value = map.next_value_seed(NoDuplicates)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A field name as Consul's decoder compares it: lower case, underscores ignored.
fn fold(key: &str) -> String {
    key.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// A JSON object whose keys are looked up the way Consul's decoder does.
pub(super) struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    /// Where this object sits, for error messages ("Check", "Checks[1]").
    pub path: String,
}

impl<'a> Fields<'a> {
    pub fn new(value: &'a Value, path: &str) -> Result<Self, ApiError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path: path.to_owned(),
            }),
            _ => Err(ApiError::field(path, "must be a JSON object")),
        }
    }

    /// A copy of the object in which each `(field, alias)`'s alias stands for the field when
    /// the field is unset (absent, empty, or a zero duration): Consul names some fields twice
    /// (`Interval`, `IntervalDuration`) and clients send one or the other.
    pub fn with_aliases(&self, pairs: &[(&str, &str)]) -> Value {
        let unset = |v: &Value| match v {
            Value::Null => true,
            Value::String(s) => s.is_empty() || parse_go_duration(s).is_ok_and(|d| d.is_zero()),
            Value::Number(n) => n.as_u64() == Some(0),
            _ => false,
        };
        let mut map = self.map.clone();
        for (field, alias) in pairs {
            let Some(alias_key) = map.keys().find(|k| fold(k) == fold(alias)).cloned() else {
                continue;
            };
            let value = map.remove(&alias_key).unwrap_or_default();
            if map.iter().any(|(k, v)| fold(k) == fold(field) && !unset(v)) {
                continue;
            }
            map.retain(|k, _| fold(k) != fold(field));
            map.insert((*field).to_owned(), value);
        }
        Value::Object(map)
    }

    pub fn name(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// Refuses a field that is in none of the `known` lists (what sextant reads, and what Consul
    /// defines and sextant has no use for: accepted, so real clients keep working), naming the
    /// closest known field.
    pub fn refuse_unknown(&self, known: &[&[&str]]) -> Result<(), ApiError> {
        let known = || known.iter().flat_map(|list| list.iter());
        for key in self.map.keys() {
            let folded = fold(key);
            if known().any(|k| fold(k) == folded) {
                continue;
            }
            let closest = known()
                .map(|k| (strsim::levenshtein(&fold(k), &folded), *k))
                .min()
                .filter(|(distance, k)| *distance <= (k.len() / 3).max(2));
            let hint = match closest {
                Some((_, field)) => format!("; did you mean `{field}`?"),
                None => String::new(),
            };
            let place = if self.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", self.path)
            };
            return Err(ApiError::BadRequest(format!("{place}unknown field `{key}`{hint}")));
        }
        Ok(())
    }

    /// The value of `field` (any casing, underscores ignored); JSON null counts as absent.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        let want = fold(field);
        self.map
            .iter()
            .find(|(k, _)| fold(k) == want)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    pub fn string(&self, field: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::field(&self.name(field), "must be a string")),
        }
    }

    pub fn bool(&self, field: &str) -> Result<bool, ApiError> {
        match self.get(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::field(&self.name(field), "must be true or false")),
        }
    }

    pub fn uint(&self, field: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max => Ok(Some(v)),
                _ => Err(ApiError::field(
                    &self.name(field),
                    format!("must be an integer from 0 to {max}, got {n}"),
                )),
            },
            Some(_) => Err(ApiError::field(
                &self.name(field),
                format!("must be an integer from 0 to {max}"),
            )),
        }
    }

    /// A Go duration: a string ("10s") or a number of nanoseconds, as Consul accepts; either way
    /// at most [`MAX_DURATION`], so that what is echoed back parses again.
    pub fn duration(&self, field: &str) -> Result<Option<Duration>, ApiError> {
        let bad = || {
            ApiError::field(
                &self.name(field),
                "must be a duration: a Go string such as \"10s\", or a number of nanoseconds",
            )
        };
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => parse_go_duration(s)
                .map(Some)
                .map_err(|e| ApiError::field(&self.name(field), e)),
            Some(Value::Number(n)) => match n.as_u64().map(Duration::from_nanos) {
                Some(d) if d <= MAX_DURATION => Ok(Some(d)),
                Some(_) => Err(ApiError::field(
                    &self.name(field),
                    format!("{n} nanoseconds is longer than the longest duration, {MAX_DURATION:?}"),
                )),
                None => Err(bad()),
            },
            Some(_) => Err(bad()),
        }
    }

    pub fn string_map(&self, field: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = value else {
            return Err(ApiError::field(&self.name(field), "must be an object of strings"));
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::field(
                    &format!("{}[{k:?}]", self.name(field)),
                    "must be a string",
                )),
            })
            .collect()
    }
}
