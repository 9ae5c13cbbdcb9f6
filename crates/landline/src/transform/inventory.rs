//! The field inventory: for each top-level field of the records written, how many records
//! have it, the JSON types its values had, and their widths.
//!
//! It is kept as records are written ([`super::RecordWriter::with_inventory`]), from the
//! spans the writer already has (each key's text and its value's, as written), without
//! parsing anything again. Records of one API have the same keys in mostly the same order,
//! so each key is first compared with the field found at the same position in the record
//! before; only a miss looks the key up in a map.
//!
//! At most [`MAX_FIELDS`] fields are inventoried; the values of fields past that are only
//! counted ([`FieldInventory::other_values`]), so that records with ever new keys (a map
//! keyed by ids) cannot make it grow without bound.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Most fields inventoried.
pub const MAX_FIELDS: usize = 1000;

/// JSON types, as the bits of [`FieldStats::types`].
const TYPE_NAMES: [&str; 6] = ["object", "array", "string", "number", "boolean", "null"];

/// What the records said about one top-level field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldStats {
    /// The field's name.
    pub name: String,
    /// Records that have it.
    pub records: u64,
    /// The JSON types of its values, in a fixed order (`object`, `array`, `string`,
    /// `number`, `boolean`, `null`).
    #[serde(with = "type_names")]
    pub types: u8,
    /// Bytes of its values as written (JSON text), summed.
    pub total_bytes: u64,
    /// Its widest value, in bytes of JSON text.
    pub largest_bytes: u64,
}

impl FieldStats {
    /// Its values' average width, in bytes of JSON text.
    pub fn average_bytes(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.total_bytes as f64 / self.records as f64
        }
    }

    /// The names of the JSON types seen.
    pub fn type_names(&self) -> Vec<&'static str> {
        type_list(self.types)
    }
}

fn type_list(bits: u8) -> Vec<&'static str> {
    TYPE_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, name)| *name)
        .collect()
}

mod type_names {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bits: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(super::type_list(*bits))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Ok(names
            .iter()
            .filter_map(|n| super::TYPE_NAMES.iter().position(|t| t == n))
            .fold(0, |bits, i| bits | 1 << i))
    }
}

/// The bit of a JSON value's type, from its first byte.
fn type_bit(value: &[u8]) -> u8 {
    match value.first() {
        Some(b'{') => 1,
        Some(b'[') => 2,
        Some(b'"') => 4,
        Some(b't' | b'f') => 16,
        Some(b'n') => 32,
        _ => 8,
    }
}

/// The inventory of a run's records (see the [module](self)).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Saved", into = "Saved")]
pub struct FieldInventory {
    fields: Vec<FieldStats>,
    /// Values of fields past [`MAX_FIELDS`].
    other_values: u64,
    /// Each field's key as written (JSON text, quotes included) → its index.
    index: HashMap<Box<[u8]>, usize>,
    /// Keys as written, by field index.
    keys: Vec<Box<[u8]>>,
    /// The field index found at each position of the record before (`usize::MAX`: none).
    order: Vec<usize>,
}

impl PartialEq for FieldInventory {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields && self.other_values == other.other_values
    }
}

impl Eq for FieldInventory {}

/// How an inventory is written down (in checkpoints and manifests).
#[derive(Serialize, Deserialize)]
struct Saved {
    fields: Vec<FieldStats>,
    #[serde(default)]
    other_values: u64,
}

impl From<Saved> for FieldInventory {
    fn from(saved: Saved) -> Self {
        let mut inventory = FieldInventory {
            other_values: saved.other_values,
            ..FieldInventory::default()
        };
        for field in saved.fields {
            let mut key = Vec::with_capacity(field.name.len() + 2);
            super::write_key(&mut key, &field.name);
            let key: Box<[u8]> = key.into();
            if inventory.index.contains_key(&key) {
                continue;
            }
            inventory.index.insert(key.clone(), inventory.fields.len());
            inventory.keys.push(key);
            inventory.fields.push(field);
        }
        inventory
    }
}

impl From<FieldInventory> for Saved {
    fn from(inventory: FieldInventory) -> Self {
        Saved {
            fields: inventory.fields,
            other_values: inventory.other_values,
        }
    }
}

impl FieldInventory {
    /// The fields seen, in the order they were first seen.
    pub fn fields(&self) -> &[FieldStats] {
        &self.fields
    }

    /// The field called `name`, if it was seen.
    pub fn field(&self, name: &str) -> Option<&FieldStats> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Values of fields not inventoried, past [`MAX_FIELDS`] fields.
    pub fn other_values(&self) -> u64 {
        self.other_values
    }

    /// A copy of the counts only, to be written down (a checkpoint): cheaper than a clone,
    /// and whole again once read back.
    pub(crate) fn snapshot(&self) -> FieldInventory {
        FieldInventory {
            fields: self.fields.clone(),
            other_values: self.other_values,
            ..FieldInventory::default()
        }
    }

    /// Counts the value of the field at `position` in its record: `key` is the key's JSON
    /// text as written (quotes included), `value` the value's.
    pub(crate) fn add(&mut self, position: usize, key: &[u8], value: &[u8]) {
        let known = self
            .order
            .get(position)
            .copied()
            .filter(|&i| self.keys.get(i).is_some_and(|k| **k == *key));
        let index = match known {
            Some(i) => i,
            None => match self.lookup(key) {
                Some(i) => {
                    if position >= self.order.len() {
                        self.order.resize(position + 1, usize::MAX);
                    }
                    self.order[position] = i;
                    i
                }
                None => {
                    self.other_values += 1;
                    return;
                }
            },
        };
        let field = &mut self.fields[index];
        let width = value.len() as u64;
        field.records += 1;
        field.types |= type_bit(value);
        field.total_bytes += width;
        field.largest_bytes = field.largest_bytes.max(width);
    }

    /// The index of the field written `key`, added if there is room.
    fn lookup(&mut self, key: &[u8]) -> Option<usize> {
        if let Some(&i) = self.index.get(key) {
            return Some(i);
        }
        if self.fields.len() >= MAX_FIELDS {
            return None;
        }
        let name = serde_json::from_slice::<String>(key)
            .unwrap_or_else(|_| String::from_utf8_lossy(key).into_owned());
        let i = self.fields.len();
        self.fields.push(FieldStats {
            name,
            records: 0,
            types: 0,
            total_bytes: 0,
            largest_bytes: 0,
        });
        let key: Box<[u8]> = key.into();
        self.index.insert(key.clone(), i);
        self.keys.push(key);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_types_and_widths_per_field() {
        let mut inv = FieldInventory::default();
        inv.add(0, br#""id""#, b"1");
        inv.add(1, br#""name""#, br#""ab""#);
        inv.add(0, br#""id""#, b"22");
        inv.add(1, br#""name""#, b"null");
        inv.add(2, br#""tags""#, b"[1,2]");
        let id = inv.field("id").unwrap();
        assert_eq!((id.records, id.total_bytes, id.largest_bytes), (2, 3, 2));
        assert_eq!(id.type_names(), ["number"]);
        let name = inv.field("name").unwrap();
        assert_eq!(name.type_names(), ["string", "null"]);
        assert_eq!(name.average_bytes(), 4.0);
        assert_eq!(inv.field("tags").unwrap().type_names(), ["array"]);
        assert_eq!(inv.fields().len(), 3);
    }

    #[test]
    fn a_field_at_another_position_is_still_the_same_field() {
        let mut inv = FieldInventory::default();
        inv.add(0, br#""a""#, b"1");
        inv.add(1, br#""b""#, b"true");
        inv.add(0, br#""b""#, b"false");
        inv.add(1, br#""a""#, br#"{"x":1}"#);
        assert_eq!(inv.fields().len(), 2);
        assert_eq!(inv.field("a").unwrap().type_names(), ["object", "number"]);
        assert_eq!(inv.field("b").unwrap().records, 2);
    }

    #[test]
    fn escaped_keys_are_named_unescaped_and_survive_a_round_trip() {
        let mut inv = FieldInventory::default();
        inv.add(0, br#""a\"b""#, b"1");
        inv.add(1, br#""caf\u00e9""#, b"1");
        assert_eq!(inv.fields()[0].name, "a\"b");
        let text = serde_json::to_string(&inv).unwrap();
        let mut back: FieldInventory = serde_json::from_str(&text).unwrap();
        assert_eq!(back, inv);
        // A key written as serde_json writes it is found again after the round trip.
        back.add(5, br#""a\"b""#, b"2");
        assert_eq!(back.field("a\"b").unwrap().records, 2);
        assert_eq!(back.fields().len(), 2);
    }

    #[test]
    fn stops_growing_at_the_cap_and_counts_the_rest() {
        let mut inv = FieldInventory::default();
        for i in 0..MAX_FIELDS + 10 {
            inv.add(i, format!("\"k{i}\"").as_bytes(), b"0");
        }
        assert_eq!(inv.fields().len(), MAX_FIELDS);
        assert_eq!(inv.other_values(), 10);
        // Known fields are still counted.
        inv.add(0, br#""k0""#, b"0");
        assert_eq!(inv.field("k0").unwrap().records, 2);
    }

    #[test]
    fn writes_types_as_names() {
        let mut inv = FieldInventory::default();
        inv.add(0, br#""v""#, br#""x""#);
        let json = serde_json::to_value(&inv).unwrap();
        assert_eq!(json["fields"][0]["types"], serde_json::json!(["string"]));
        assert_eq!(json["fields"][0]["name"], "v");
    }
}
