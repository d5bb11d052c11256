//! The customer store's ids: customer ids by index and the index that
//! finds them, the plan and segment name interners, the watch on floods of
//! new ids, and the stable hash the population sample is drawn by.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::Engine;
use crate::business::OTHER_GROUP;
use crate::event::{Ts, format_ts};
use crate::state::customer::Customer;

/// Interns plan and segment names; id 0 is "none". At most `cap` distinct
/// names are kept (plus the configured plans): the rest are counted under
/// [`OTHER_GROUP`], since each becomes a label value of every per-plan
/// gauge and a key of the API (a producer writing customer ids into `plan`
/// must not grow them without bound).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Names {
    names: Vec<Box<str>>,
    /// Derived from `names` (rebuilt after a restore).
    #[serde(skip)]
    pub(super) ids: FxHashMap<Box<str>, u16>,
    #[serde(skip)]
    pub(super) label: &'static str,
    cap: usize,
    kept: usize,
    other: u16,
    /// Times a name was counted under [`OTHER_GROUP`].
    pub(super) folded: u64,
}

impl Names {
    pub(super) fn new(label: &'static str, cap: usize) -> Self {
        Names {
            names: vec!["none".into()],
            label,
            cap: cap.min(usize::from(u16::MAX) - 2),
            ..Default::default()
        }
    }

    fn push(&mut self, s: &str) -> u16 {
        let i = self.names.len() as u16;
        self.names.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }

    /// Interns `s` whatever the cap (configured plans).
    pub(super) fn keep(&mut self, s: &str) {
        if !self.ids.contains_key(s) {
            self.push(s);
        }
    }

    /// The id of an event's name, counting it when folded.
    pub(super) fn id(&mut self, s: &str) -> u16 {
        let i = self.intern(s);
        if i != 0 && i == self.other {
            self.folded += 1;
        }
        i
    }

    /// The id of `s`, interned if new (under [`OTHER_GROUP`] past the cap).
    pub(super) fn intern(&mut self, s: &str) -> u16 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        if self.kept >= self.cap {
            if self.other == 0 {
                tracing::warn!(
                    label = self.label,
                    max_label_values = self.cap,
                    first = s,
                    "more distinct {} names than max_label_values: the rest are counted as {OTHER_GROUP}",
                    self.label
                );
                self.other = self.push(OTHER_GROUP);
            }
            return self.other;
        }
        self.kept += 1;
        self.push(s)
    }

    /// Rebuilds `ids` from `names` (after a restore; id 0, "none", is not
    /// a name events carry).
    pub(super) fn rebuild_ids(&mut self) {
        self.ids = (self.names.iter().enumerate().skip(1))
            .map(|(i, n)| (n.clone(), i as u16))
            .collect();
    }

    /// The name of id `i` (`None` for 0, "none").
    pub(super) fn name(&self, i: u16) -> Option<&str> {
        if i == 0 {
            None
        } else {
            self.names.get(usize::from(i)).map(|s| &**s)
        }
    }
}

/// Bytes of ids in all up to which their ends take 4 bytes (small in tests).
const NARROW_IDS_MAX: usize = if cfg!(test) { 20 } else { u32::MAX as usize };

/// Every customer id in one string (one allocation instead of one per
/// customer), by customer index; customers are never removed.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Ids {
    text: String,
    /// End of each id in `text`, 4 bytes a customer while `text` is below 4 GiB ...
    ends: Vec<u32>,
    /// ... and in here instead beyond.
    wide_ends: Vec<usize>,
}

impl Ids {
    pub(super) fn push(&mut self, id: &str) {
        self.text.push_str(id);
        match u32::try_from(self.text.len()) {
            Ok(end) if self.wide_ends.is_empty() && self.text.len() <= NARROW_IDS_MAX => {
                self.ends.push(end)
            }
            _ => {
                if self.wide_ends.is_empty() {
                    self.wide_ends = self.ends.drain(..).map(|e| e as usize).collect();
                    self.ends = Vec::new();
                }
                self.wide_ends.push(self.text.len());
            }
        }
    }

    fn end(&self, i: usize) -> usize {
        if self.wide_ends.is_empty() {
            self.ends[i] as usize
        } else {
            self.wide_ends[i]
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len() + self.wide_ends.len()
    }

    /// The id of customer `ix`.
    pub(super) fn get(&self, ix: u32) -> &str {
        let i = ix as usize;
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        &self.text[start..self.end(i)]
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<u32>()
            + self.wide_ends.capacity() * std::mem::size_of::<usize>()
    }
}

/// Customers first seen per minute of event time, to make a flood of new
/// ids (a producer writing user ids or random UUIDs as `customer_id`)
/// visible before memory does.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct NewIds {
    /// Event time of the engine's first customer: the first hour, when
    /// every customer is new, does not warn.
    since: Option<Ts>,
    pub(super) minute: i64,
    pub(super) count: u64,
    pub(super) last_minute: u64,
}

impl NewIds {
    /// One more customer first seen at `ts`; whether that minute just went
    /// past `limit` (after the first hour).
    fn add(&mut self, ts: Ts, limit: u64) -> bool {
        let since = *self.since.get_or_insert(ts);
        let minute = ts.div_euclid(60_000);
        if minute > self.minute {
            self.last_minute = if minute == self.minute + 1 {
                self.count
            } else {
                0
            };
            (self.minute, self.count) = (minute, 0);
        }
        if minute == self.minute {
            self.count += 1;
        }
        self.count == limit + 1 && ts >= since + 3_600_000
    }
}

/// Deepest sample level (1 in 2^32 customers).
pub(super) const MAX_SAMPLE_LEVEL: usize = 32;

/// The sample level of a sweep over `customers` customers (of every engine
/// of the instance): the least `L` with `customers / 2^L <= sample`
/// (`population_sample`, 10,000 by default: a percentile on about 100
/// customers). A customer is in the sample of level `L` when its
/// [`sample_hash`] is below `2^(64 - L)`: all customers up to `sample`, else
/// between about a half and all of `sample` of them, the same ones whatever
/// the order of arrival and however they are spread over the engines of an
/// instance. This keeps a daily sweep's sampling cost bounded however many
/// customers there are.
pub fn sample_level(customers: usize, sample: usize) -> usize {
    let mut l = 0;
    while l < MAX_SAMPLE_LEVEL && (customers >> l) > sample {
        l += 1;
    }
    l
}

/// The stable hash the population sample ([`sample_level`]) is drawn by (FxHash, then the
/// SplitMix64 finalizer so every bit is mixed; never `DefaultHasher`, which
/// is seeded per process).
pub fn sample_hash(id: &str) -> u64 {
    let mut z = FxBuildHasher.hash_one(id);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sample level list a customer id belongs to (leading zeros of its
/// [`sample_hash`], capped).
fn sample_level_of(id: &str) -> usize {
    (sample_hash(id).leading_zeros() as usize).min(MAX_SAMPLE_LEVEL)
}

impl Engine {
    /// The index of customer `id`, if known.
    pub(super) fn find(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.index.find(h, |&ix| self.ids.get(ix) == id).copied()
    }

    /// The index of customer `id`, a new customer first seen at `ts` if unknown.
    pub(super) fn find_or_insert(&mut self, id: &str, ts: Ts) -> u32 {
        if let Some(ix) = self.find(id) {
            return ix;
        }
        let ix = self.customers.len() as u32;
        if self.new_ids.add(ts, self.cfg.new_customers_warn_per_minute) {
            tracing::warn!(
                minute = %format_ts(ts.div_euclid(60_000) * 60_000),
                limit = self.cfg.new_customers_warn_per_minute,
                customers = self.customers.len() + 1,
                latest = id,
                "more new customer ids in one minute of event time than new_customers_warn_per_minute: is a producer writing other ids (users, random UUIDs) into customer_id?"
            );
        }
        self.customers.push(Customer::new(ts));
        self.visits.push_customer();
        self.ids.push(id);
        self.levels[sample_level_of(id)].push(ix);
        let h = self.hasher.hash_one(id);
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.index
            .insert_unique(h, ix, |&i| hasher.hash_one(ids.get(i)));
        ix
    }

    /// Rebuilds what is derived from the stored ids (the index of customer
    /// ids, the sample levels, the names' lookups) after a restore.
    pub(super) fn rebuild_index(&mut self) {
        self.index = HashTable::with_capacity(self.customers.len());
        self.levels = vec![Vec::new(); MAX_SAMPLE_LEVEL + 1];
        for ix in 0..self.customers.len() as u32 {
            let id = self.ids.get(ix);
            let (ids, hasher) = (&self.ids, &self.hasher);
            self.index
                .insert_unique(hasher.hash_one(id), ix, |&i| hasher.hash_one(ids.get(i)));
            self.levels[sample_level_of(id)].push(ix);
        }
        self.plans.rebuild_ids();
        self.segments.rebuild_ids();
    }
}

#[cfg(test)]
mod tests {
    use super::{Ids, NewIds};

    #[test]
    fn ids_read_back_before_and_after_the_wide_switch() {
        let mut ids = Ids::default();
        let all: Vec<String> = (0..12).map(|i| format!("c-{i}")).collect();
        for id in &all {
            ids.push(id);
        }
        assert!(!ids.wide_ends.is_empty(), "the test limit was passed");
        for (i, id) in all.iter().enumerate() {
            assert_eq!(ids.get(i as u32), id);
        }
    }

    #[test]
    fn new_ids_warn_once_per_minute_past_the_limit_after_the_first_hour() {
        let mut n = NewIds::default();
        let hour = 3_600_000;
        // The first hour: every customer is new, no warning.
        assert!((0..50).all(|_| !n.add(0, 10)));
        // A quiet minute, then a flood of 12 in one minute: warned at the 11th, once.
        assert!(!n.add(2 * hour, 10));
        let warned: Vec<bool> = (0..12).map(|_| n.add(2 * hour + 60_000, 10)).collect();
        assert_eq!(warned.iter().filter(|w| **w).count(), 1);
        assert!(warned[10]);
        // The next minute reports the flood as the last complete one.
        assert!(!n.add(2 * hour + 120_000, 10));
        assert_eq!(n.last_minute, 12);
        // A gap of minutes: the last complete minute had none.
        assert!(!n.add(2 * hour + 600_000, 10));
        assert_eq!(n.last_minute, 0);
    }
}
