//! The mapping file as serde reads it: every key spanned so validation can
//! point at the line, every table closed to unknown keys. Nothing here is
//! trusted; `validate` turns it into the types of `mod.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(crate) type Str = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub user: Spanned<RawResource>,
    pub group: Option<Spanned<RawGroup>>,
    #[serde(default)]
    pub extension: Vec<Spanned<RawExtension>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    pub dn: Str,
    pub object_classes: Spanned<Vec<Str>>,
    pub id_attribute: Option<Str>,
    pub attributes: Spanned<BTreeMap<Str, Spanned<RawRule>>>,
    pub deactivate: Option<Spanned<RawDeactivate>>,
    pub delete: Option<Spanned<RawDelete>>,
    pub adopt: Option<Spanned<RawAdopt>>,
    /// `[user.password]` (see `password.rs`).
    pub password: Option<Spanned<super::password::RawPassword>>,
}

/// `[user.adopt]` / `[group.adopt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdopt {
    pub enabled: Option<Spanned<bool>>,
    pub under: Option<Spanned<Vec<Str>>>,
    pub filter: Option<Str>,
    pub never: Option<Spanned<Vec<Str>>>,
    pub never_filter: Option<Str>,
    pub keep_members: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub dn: Str,
    pub object_classes: Spanned<Vec<Str>>,
    pub id_attribute: Option<Str>,
    pub attributes: Spanned<BTreeMap<Str, Spanned<RawRule>>>,
    pub members: Spanned<RawMembers>,
    pub adopt: Option<Spanned<RawAdopt>>,
}

/// `attr = "path"` or `attr = { from = ..., ... }`.
#[derive(Debug)]
pub(crate) enum RawRule {
    Short(String),
    Full(Box<RawRuleTable>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuleTable {
    pub from: Option<Spanned<OneOrMany>>,
    pub value: Option<Str>,
    pub transform: Option<Spanned<OneOrMany>>,
    pub required: Option<Spanned<bool>>,
    pub unique: Option<Spanned<bool>>,
    pub resolve: Option<Str>,
    pub allocate: Option<Str>,
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a SCIM path or template string, or a table { from = ..., transform = ..., required = ... }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawRule, E> {
                Ok(RawRule::Short(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawRule, A::Error> {
                RawRuleTable::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|t| RawRule::Full(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or an array of strings (`from`, `transform`, `set` values).
#[derive(Debug)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<Str>),
}

impl OneOrMany {
    /// Each string with its span and, for the array form, its index.
    pub(crate) fn items(this: &Spanned<OneOrMany>) -> Vec<(Range<usize>, Option<usize>, &str)> {
        match this.get_ref() {
            OneOrMany::One(s) => vec![(this.span(), None, s.as_str())],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (s.span(), Some(i), s.get_ref().as_str()))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Str>()? {
                    v.push(s);
                }
                Ok(OneOrMany::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMembers {
    pub attribute: Str,
    pub value: Option<Str>,
    pub empty: Spanned<RawEmpty>,
    #[serde(default)]
    pub refint: bool,
    pub also: Option<Spanned<Vec<Spanned<RawAlso>>>>,
}

/// One entry of `also`: another attribute listing the same members.
/// `empty` and `refint` are read only to be refused with a reason (they
/// belong to the table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlso {
    pub attribute: Str,
    pub value: Option<Str>,
    pub empty: Option<Spanned<de::IgnoredAny>>,
    pub refint: Option<Spanned<de::IgnoredAny>>,
}

/// `empty = "allow"` or `empty = { placeholder = "dn" }`.
#[derive(Debug)]
pub(crate) enum RawEmpty {
    Word(String),
    Placeholder(RawPlaceholder),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlaceholder {
    pub placeholder: Str,
}

impl<'de> Deserialize<'de> for RawEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEmpty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"allow\" or a table { placeholder = \"<dn>\" }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawEmpty, E> {
                Ok(RawEmpty::Word(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawEmpty, A::Error> {
                RawPlaceholder::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(RawEmpty::Placeholder)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeactivate {
    pub set: Option<Spanned<BTreeMap<Str, Spanned<OneOrMany>>>>,
    pub move_to: Option<Str>,
    pub remove_from_groups: Option<Spanned<bool>>,
    pub ad_user_account_control: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelete {
    pub action: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtension {
    pub urn: Str,
    pub resource: Str,
    pub attributes: Spanned<Vec<Spanned<RawExtensionAttribute>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtensionAttribute {
    pub name: Str,
    #[serde(rename = "type")]
    pub kind: Option<Str>,
    pub multi_valued: Option<bool>,
    pub case_exact: Option<bool>,
    pub required: Option<bool>,
}
