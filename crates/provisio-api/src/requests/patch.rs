//! A field of a partial update that tells "absent" (keep) from `null` (clear) and a value (set).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    /// Applies the patch to a current optional value.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current,
            Patch::Clear => None,
            Patch::Set(v) => Some(v),
        }
    }

    /// For `skip_serializing_if`: a kept field must be left out of the body, since written
    /// out it would read back as `null`, which clears.
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }
}

/// Use with `#[serde(default)]`: a missing field stays `Keep`.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Patch::Set(v),
            None => Patch::Clear,
        })
    }
}

/// Use with `skip_serializing_if = "Patch::is_keep"`.
impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Set(v) => s.serialize_some(v),
            Patch::Keep | Patch::Clear => s.serialize_none(),
        }
    }
}
