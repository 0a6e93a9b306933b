//! Reading an [`Envelope`] without buffering it.
//!
//! The derived form (`#[serde(flatten)]` over an adjacently tagged payload)
//! reads the whole event into serde's intermediate `Content` tree first and
//! the payload out of that again: a tree of allocations per event at every
//! stage, ahead of the payload's own. Here the attributes are read as they
//! come and the payload's `data` straight from the input, once its `type`
//! is known. An event whose `data` comes before its `type` (no producer of
//! ours writes one) still reads, through a `Value`.

use std::marker::PhantomData;

use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use serde::Deserialize;
use serde_json::Value;

use super::Envelope;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Specversion,
    Id,
    Source,
    Time,
    Datacontenttype,
    Imreceived,
    Traceparent,
    Tracestate,
    Type,
    Data,
    #[serde(other)]
    Other,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Envelope<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a structured CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut specversion, mut id, mut source, mut time, mut datacontenttype) =
            (None, None, None, None, None);
        let (mut imreceived, mut traceparent, mut tracestate) = (None, None, None);
        let mut kind: Option<String> = None;
        let mut payload: Option<T> = None;
        let mut early_data: Option<Value> = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Specversion => specversion = Some(map.next_value()?),
                Field::Id => id = Some(map.next_value()?),
                Field::Source => source = Some(map.next_value()?),
                Field::Time => time = Some(map.next_value()?),
                Field::Datacontenttype => datacontenttype = Some(map.next_value()?),
                Field::Imreceived => imreceived = map.next_value()?,
                Field::Traceparent => traceparent = map.next_value()?,
                Field::Tracestate => tracestate = map.next_value()?,
                Field::Type => kind = Some(map.next_value()?),
                Field::Data => match &kind {
                    Some(kind) => {
                        payload = Some(map.next_value_seed(Payload {
                            kind,
                            _payload: PhantomData,
                        })?)
                    }
                    None => early_data = Some(map.next_value()?),
                },
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let payload = match payload {
            Some(payload) => payload,
            None => {
                let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
                let mut tagged = serde_json::Map::new();
                tagged.insert("type".into(), Value::String(kind));
                if let Some(data) = early_data {
                    tagged.insert("data".into(), data);
                }
                T::deserialize(Value::Object(tagged)).map_err(de::Error::custom)?
            }
        };
        Ok(Envelope {
            specversion: specversion.ok_or_else(|| de::Error::missing_field("specversion"))?,
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            source: source.ok_or_else(|| de::Error::missing_field("source"))?,
            time: time.ok_or_else(|| de::Error::missing_field("time"))?,
            datacontenttype: datacontenttype
                .ok_or_else(|| de::Error::missing_field("datacontenttype"))?,
            imreceived,
            traceparent,
            tracestate,
            payload,
        })
    }
}

/// The payload, read from its `data` now that its `type` is known: the
/// payload's own (adjacently tagged) reading is given a map of exactly
/// those two, whose `data` is the input itself.
struct Payload<'k, T> {
    kind: &'k str,
    _payload: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Payload<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, data: D) -> Result<T, D::Error> {
        T::deserialize(Tagged {
            kind: self.kind,
            data,
        })
    }
}

struct Tagged<'k, D> {
    kind: &'k str,
    data: D,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_map(TaggedMap {
            kind: self.kind,
            data: Some(self.data),
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct TaggedMap<'k, D> {
    kind: &'k str,
    data: Option<D>,
    /// 0: `type` comes next, 1: `data`, 2: nothing.
    next: u8,
}

impl<'de, D: Deserializer<'de>> MapAccess<'de> for TaggedMap<'_, D> {
    type Error = D::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, D::Error> {
        let key = match self.next {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, D::Error> {
        self.next += 1;
        match self.next {
            1 => seed.deserialize(self.kind.into_deserializer()),
            _ => match self.data.take() {
                Some(data) => seed.deserialize(data),
                None => Err(de::Error::custom("an event's data read twice")),
            },
        }
    }
}
