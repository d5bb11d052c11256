//! Compact per-customer rolling windows, bucketed by UTC day of event time,
//! held in one allocation per customer ([`Usage`]) and read through two views:
//!
//! - [`Activity`]: sparse daily buckets of event count and quantity (only days
//!   with activity are stored) for [`HORIZON_DAYS`] days.
//! - [`Seats`]: per user, a 64-bit bitmap of the days it was active, so the
//!   distinct active users of any window inside the last 64 days are exact.

use crate::event::{DAY_MS, Ts};

/// Days of history kept: a 7-day current window plus an 8-week baseline, and
/// two days of slack for evaluations between midnights.
pub const HORIZON_DAYS: i32 = 65;

/// UTC day number of an event time.
pub fn day_of(ts: Ts) -> i32 {
    ts.div_euclid(DAY_MS) as i32
}

/// One day of activity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DayBucket {
    /// UTC day number.
    pub day: i32,
    /// Events that day.
    pub events: u32,
    /// Sum of `quantity` that day.
    pub quantity: f32,
}

/// A customer's usage windows in one allocation: its daily activity
/// buckets and its active users' day bitmaps. Most customers have both, and
/// one box instead of two saves a pointer and an allocation's overhead per
/// customer, and a cache miss per usage event.
///
/// Layout, in `u32` words: `[days, then 3 per day: day, events, quantity
/// bits (sorted by day), then the seats' words]`. The seats' words are
/// empty until the first user, then `[anchor, users, then per user: hash,
/// low and high half of its day bitmap]`, with some room at the end once
/// there are more than a few users. The anchor is the day of bit 0 of every
/// bitmap (the newest day seen); bit i set = active on day `anchor - i`.
/// Exactly sized otherwise: a new day reallocates, which is rare next to
/// the events that land on a known day. No usage at all: no allocation.
///
/// A snapshot stores it as the two parts it was before (format v1): the
/// buckets, then the seats' words, room included.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    words: Box<[u32]>,
}

/// Words of one day bucket or one user.
const CELL: usize = 3;

impl Usage {
    fn days_len(&self) -> usize {
        self.words.first().map_or(0, |n| *n as usize)
    }

    fn seats_start(&self) -> usize {
        if self.words.is_empty() {
            0
        } else {
            1 + CELL * self.days_len()
        }
    }

    /// Daily activity.
    pub fn activity(&self) -> Activity<'_> {
        Activity(
            self.words
                .get(1..self.seats_start())
                .unwrap_or(&[])
                .as_chunks()
                .0,
        )
    }

    /// Active users by day (tracking or not).
    pub fn seats(&self) -> Seats<'_> {
        Seats(&self.words[self.seats_start()..])
    }

    /// The words of `n_days` days followed by `parts` (the rest of the day
    /// words, then the seat words), in one exactly sized allocation; no
    /// allocation when empty.
    fn built(n_days: usize, parts: &[&[u32]]) -> Box<[u32]> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return Box::default();
        }
        let mut w = Vec::with_capacity(1 + len);
        w.push(n_days as u32);
        for p in parts {
            w.extend_from_slice(p);
        }
        w.into_boxed_slice()
    }

    /// Adds one event on `day`; `today` is the newest day seen, for pruning.
    pub fn add(&mut self, day: i32, quantity: f64, today: i32) {
        if day <= today - HORIZON_DAYS {
            return; // older than anything a window looks at
        }
        let n = self.days_len();
        let days = self.activity();
        let at = match days.0.last().map(|c| c[0] as i32) {
            Some(last) if last == day => Ok(n - 1),
            Some(last) if last < day => Err(n),
            None => Err(0),
            Some(_) => days.0.binary_search_by_key(&day, |c| c[0] as i32),
        };
        match at {
            Ok(i) => {
                let j = 1 + CELL * i;
                self.words[j + 1] = self.words[j + 1].saturating_add(1);
                self.words[j + 2] = (f32::from_bits(self.words[j + 2]) + quantity as f32).to_bits();
            }
            Err(i) => {
                let new = [day as u32, 1, (quantity as f32).to_bits()];
                let rest = self.words.get(1..).unwrap_or(&[]);
                let (before, after) = rest.split_at(CELL * i);
                self.words = Self::built(n + 1, &[before, &new, after]);
            }
        }
        self.prune(today);
    }

    /// Drops buckets that fell out of the horizon.
    pub fn prune(&mut self, today: i32) {
        let keep_from = today - HORIZON_DAYS + 1;
        let n = (self.activity().0.iter())
            .take_while(|c| (c[0] as i32) < keep_from)
            .count();
        if n > 0 {
            self.words = Self::built(self.days_len() - n, &[&self.words[1 + CELL * n..]]);
        }
    }

    /// Marks `user` active on `day`.
    pub fn add_user(&mut self, user_hash: u32, day: i32) {
        if self.words.len() == self.seats_start() {
            let days = self.words.get(1..).unwrap_or(&[]);
            self.words = Self::built(self.days_len(), &[days, &[0; SEATS_HEAD]]);
        }
        let s0 = self.seats_start();
        let seats = &mut self.words[s0..];
        if seats[1] == 0 && seats[0] == 0 {
            seats[0] = day as u32;
        }
        let anchor = seats[0] as i32;
        if day > anchor {
            let shift = (day - anchor) as u32;
            // Shift every bitmap and drop the users left without a day, in order.
            let mut kept = 0;
            for i in 0..seats[1] as usize {
                let bits = seat_bits(seats, i);
                let bits = if shift >= 64 { 0 } else { bits << shift };
                if bits != 0 {
                    let hash = seats[SEATS_HEAD + CELL * i];
                    set_seat(seats, kept, hash, bits);
                    kept += 1;
                }
            }
            seats[1] = kept as u32;
            seats[0] = day as u32;
        }
        let back = seats[0] as i32 - day;
        if back >= 64 {
            return;
        }
        let bit = 1u64 << back;
        let n = seats[1] as usize;
        if let Some(i) = (0..n).find(|&i| seats[SEATS_HEAD + CELL * i] == user_hash) {
            let bits = seat_bits(seats, i) | bit;
            set_seat(seats, i, user_hash, bits);
        } else if n < MAX_SEATS {
            if SEATS_HEAD + CELL * (n + 1) > seats.len() {
                let room = if n < EXACT_USERS { n + 1 } else { n + n / 2 };
                let more = vec![0u32; SEATS_HEAD + CELL * room - seats.len()];
                self.words = Self::built(self.days_len(), &[&self.words[1..], &more]);
            }
            let seats = &mut self.words[s0..];
            set_seat(seats, n, user_hash, bit);
            seats[1] = (n + 1) as u32;
        }
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * std::mem::size_of::<u32>()
    }
}

impl serde::Serialize for Usage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        /// The buckets as the snapshot's format v1 stores them.
        struct Buckets<'a>(Activity<'a>);
        impl serde::Serialize for Buckets<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.buckets())
            }
        }
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&Buckets(self.activity()))?;
        t.serialize_element(self.seats().0)?;
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for Usage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Usage;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("activity buckets, then seat words")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Usage, A::Error> {
                use serde::de::Error;
                let buckets: Vec<DayBucket> = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let seats: Vec<u32> = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let users_fit = seats.len() >= SEATS_HEAD
                    && (seats.len() - SEATS_HEAD).is_multiple_of(CELL)
                    && seats[1] as usize <= (seats.len() - SEATS_HEAD) / CELL;
                if !seats.is_empty() && !users_fit {
                    return Err(A::Error::custom("seat words do not hold their users"));
                }
                if !buckets.is_sorted_by(|a, b| a.day < b.day) {
                    return Err(A::Error::custom("activity buckets out of day order"));
                }
                let days: Vec<u32> = buckets
                    .iter()
                    .flat_map(|b| [b.day as u32, b.events, b.quantity.to_bits()])
                    .collect();
                Ok(Usage {
                    words: Usage::built(buckets.len(), &[&days, &seats]),
                })
            }
        }
        d.deserialize_tuple(2, V)
    }
}

/// Daily activity: sparse daily buckets of event count and quantity (only
/// days with activity), sorted by day, for [`HORIZON_DAYS`] days.
#[derive(Debug, Clone, Copy)]
pub struct Activity<'a>(&'a [[u32; CELL]]);

impl<'a> Activity<'a> {
    /// Index of the first bucket on or after `day`.
    fn start_of(&self, day: i32) -> usize {
        self.0.partition_point(|c| (c[0] as i32) < day)
    }

    /// Events in days `[from, to)`.
    pub fn events(&self, from: i32, to: i32) -> u64 {
        self.range(from, to).map(|b| u64::from(b.events)).sum()
    }

    /// Quantity in days `[from, to)`.
    pub fn quantity(&self, from: i32, to: i32) -> f64 {
        self.range(from, to).map(|b| f64::from(b.quantity)).sum()
    }

    /// Variance of the daily event count over the days `[from, to)` around
    /// each weekday's own mean (days without activity count as zero), so a
    /// weekly rhythm is not mistaken for noise.
    pub fn daily_residual_variance(&self, from: i32, to: i32) -> f64 {
        if to <= from {
            return 0.0;
        }
        let mut sum = [0.0f64; 7];
        let mut sq = [0.0f64; 7];
        // Days without activity add zero to `sum` and `sq`: only their count matters.
        for b in self.range(from, to) {
            let x = f64::from(b.events);
            let w = b.day.rem_euclid(7) as usize;
            sum[w] += x;
            sq[w] += x * x;
        }
        let (full, extra) = ((to - from) / 7, (to - from) % 7);
        let first = from.rem_euclid(7);
        let n: [f64; 7] = std::array::from_fn(|w| {
            f64::from(full + i32::from((w as i32 - first).rem_euclid(7) < extra))
        });
        let total: f64 = n.iter().sum();
        let resid: f64 = (0..7)
            .filter(|&w| n[w] > 0.0)
            .map(|w| sq[w] - sum[w] * sum[w] / n[w])
            .sum();
        (resid / total).max(0.0)
    }

    /// Days with activity in `[from, to)`.
    pub fn active_days(&self, from: i32, to: i32) -> u32 {
        self.range(from, to).count() as u32
    }

    fn range(&self, from: i32, to: i32) -> impl Iterator<Item = DayBucket> + 'a {
        let start = self.start_of(from);
        Activity(&self.0[start..])
            .buckets()
            .take_while(move |b| b.day < to)
    }

    /// The buckets, oldest first.
    pub fn buckets(self) -> impl DoubleEndedIterator<Item = DayBucket> + ExactSizeIterator + 'a {
        self.0.iter().map(|c| DayBucket {
            day: c[0] as i32,
            events: c[1],
            quantity: f32::from_bits(c[2]),
        })
    }

    /// Heap bytes of the buckets.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.0)
    }
}

/// Distinct active users by day, exact over the last 64 days (the seats'
/// words of a [`Usage`]).
#[derive(Debug, Clone, Copy)]
pub struct Seats<'a>(&'a [u32]);

/// Most users tracked per customer; beyond it new users are not counted.
pub const MAX_SEATS: usize = 4096;

/// Words before the first user in the seats' words.
const SEATS_HEAD: usize = 2;
/// Users stored without spare room.
const EXACT_USERS: usize = 8;

fn seat_bits(seats: &[u32], i: usize) -> u64 {
    let j = SEATS_HEAD + CELL * i;
    u64::from(seats[j + 1]) | (u64::from(seats[j + 2]) << 32)
}

fn set_seat(seats: &mut [u32], i: usize, hash: u32, bits: u64) {
    let j = SEATS_HEAD + CELL * i;
    seats[j] = hash;
    seats[j + 1] = bits as u32;
    seats[j + 2] = (bits >> 32) as u32;
}

impl Seats<'_> {
    fn anchor(&self) -> i32 {
        self.0.first().map_or(0, |a| *a as i32)
    }

    fn len(&self) -> usize {
        self.0.get(1).map_or(0, |n| *n as usize)
    }

    fn users(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        (0..self.len()).map(|i| (self.0[SEATS_HEAD + CELL * i], seat_bits(self.0, i)))
    }

    /// True once a user was added (even if all have aged out since).
    pub fn is_tracking(&self) -> bool {
        !self.0.is_empty()
    }

    /// Distinct users active in each of the 9 weeks before `today`: index
    /// `k` is the week `[today - 7 (k + 1), today - 7 k)`, so 0 is the current
    /// week. One pass over the users instead of one per week.
    pub fn distinct_weeks(&self, today: i32) -> [u32; 9] {
        let masks: [u64; 9] =
            std::array::from_fn(|k| self.mask(today - 7 * (k as i32 + 1), today - 7 * k as i32));
        let mut out = [0u32; 9];
        let n = self.len();
        for u in self.0[SEATS_HEAD..SEATS_HEAD + CELL * n].chunks_exact(CELL) {
            let bits = u64::from(u[1]) | (u64::from(u[2]) << 32);
            for (o, m) in out.iter_mut().zip(masks) {
                *o += u32::from(bits & m != 0);
            }
        }
        out
    }

    /// Regular users at `today` and how many of them were away this week:
    /// a user is regular when active in every one of the `weeks` baseline
    /// weeks (`[today - 7 (k + 1), today - 7 k)` for `k` in `1..=weeks`), and
    /// away when not active in the current week (`[today - 7, today)`).
    pub fn regulars(&self, today: i32, weeks: usize) -> (u32, u32) {
        self.regulars_since(today, today, weeks)
    }

    /// [`Self::regulars`] with the baseline weeks taken before `base_today`
    /// (e.g. the day a seat-loss alert fired, so that the users who left do
    /// not stop being regulars as the weeks without them enter the baseline)
    /// and the current week before `today`. Days older than the 64 the
    /// record keeps count as inactive: a baseline that old has no regulars.
    pub fn regulars_since(&self, base_today: i32, today: i32, weeks: usize) -> (u32, u32) {
        let weeks = weeks.min(8);
        let base: [u64; 8] = std::array::from_fn(|k| {
            self.mask(
                base_today - 7 * (k as i32 + 2),
                base_today - 7 * (k as i32 + 1),
            )
        });
        let current = self.mask(today - 7, today);
        let (mut regular, mut away) = (0, 0);
        for (_, bits) in self.users() {
            let present = base[..weeks].iter().filter(|m| bits & **m != 0).count();
            if weeks >= 1 && present == weeks {
                regular += 1;
                away += u32::from(bits & current == 0);
            }
        }
        (regular, away)
    }

    /// Distinct users active in days `[from, to)`.
    pub fn distinct(&self, from: i32, to: i32) -> u32 {
        let mask = self.mask(from, to);
        if mask == 0 {
            return 0;
        }
        self.users().filter(|(_, b)| b & mask != 0).count() as u32
    }

    fn mask(&self, from: i32, to: i32) -> u64 {
        // Day d maps to bit anchor - d; keep days within the 64 bits.
        let anchor = self.anchor();
        let hi = (anchor - from).min(63);
        let lo = (anchor - to + 1).max(0);
        if hi < lo || hi < 0 {
            return 0;
        }
        let width = (hi - lo + 1) as u32;
        let ones = if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        ones << lo
    }

    /// Users tracked.
    pub fn tracked(&self) -> usize {
        self.len()
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.0)
    }
}

/// Median of a small slice (sorts a copy); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn late_events_land_in_their_day() {
        let mut u = Usage::default();
        u.add(100, 1.0, 100);
        u.add(98, 2.0, 100);
        u.add(99, 1.0, 100);
        u.add(98, 1.0, 100);
        let a = u.activity();
        assert_eq!(
            a.buckets().map(|b| b.day).collect::<Vec<_>>(),
            vec![98, 99, 100]
        );
        assert_eq!(a.events(98, 99), 2);
        assert_eq!(a.quantity(98, 101), 5.0);
        u.add(100 + HORIZON_DAYS, 1.0, 100 + HORIZON_DAYS);
        assert_eq!(u.activity().events(0, 1000), 1, "old days pruned");
    }

    #[test]
    fn seats_count_distinct_users_per_window() {
        let mut u = Usage::default();
        assert!(!u.seats().is_tracking());
        u.add_user(1, 10);
        u.add_user(2, 10);
        u.add_user(1, 12);
        u.add_user(3, 20);
        let s = u.seats();
        assert!(s.is_tracking());
        assert_eq!(s.distinct(10, 11), 2);
        assert_eq!(s.distinct(10, 21), 3);
        assert_eq!(s.distinct(11, 20), 1);
        assert_eq!(s.distinct(13, 20), 0);
        u.add_user(4, 90); // everything earlier falls out of the 64-day bitmap
        assert_eq!(u.seats().distinct(0, 100), 1);
        assert!(
            u.activity().buckets().next().is_none(),
            "users alone add no day"
        );
    }

    proptest! {
        /// The windows agree with a naive recompute over the raw events.
        #[test]
        fn windows_match_naive_recompute(
            evs in proptest::collection::vec((0i32..120, 0u32..14, 0.0f64..10.0), 1..300),
            from_back in 1i32..63, len in 1i32..40,
        ) {
            let mut u = Usage::default();
            let mut today = i32::MIN;
            for &(day, user, q) in &evs {
                today = today.max(day);
                u.add(day, q, today);
                u.add_user(user, day);
            }
            // A snapshot's round trip keeps it as it was.
            let bytes = postcard::to_stdvec(&u).unwrap();
            let back: Usage = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back.words, &u.words);
            let (a, s) = (u.activity(), u.seats());
            let from = today - from_back;
            let to = (from + len).min(today + 1);
            let in_range: Vec<_> = evs.iter().filter(|(d, _, _)| *d >= from && *d < to).collect();
            prop_assert_eq!(a.events(from, to), in_range.len() as u64);
            let q: f64 = in_range.iter().map(|(_, _, q)| *q).sum();
            prop_assert!((a.quantity(from, to) - q).abs() < 1e-3 * (1.0 + q));
            let mut users: Vec<u32> = in_range.iter().map(|(_, u, _)| *u).collect();
            users.sort();
            users.dedup();
            prop_assert_eq!(s.distinct(from, to), users.len() as u32);
            let weeks = s.distinct_weeks(to);
            for (k, n) in weeks.iter().enumerate() {
                let k = k as i32;
                prop_assert_eq!(*n, s.distinct(to - 7 * (k + 1), to - 7 * k));
            }
            let mut days: Vec<i32> = in_range.iter().map(|(d, _, _)| *d).collect();
            days.sort();
            days.dedup();
            prop_assert_eq!(a.active_days(from, to), days.len() as u32);
            // Residual variance against a naive recompute.
            let mut per_day = std::collections::BTreeMap::new();
            for &(d, _, _) in &evs {
                *per_day.entry(d).or_insert(0.0f64) += 1.0;
            }
            let (lo, hi) = (today - 62, today + 1);
            let mut by_wd: Vec<Vec<f64>> = vec![Vec::new(); 7];
            for d in lo..hi {
                by_wd[d.rem_euclid(7) as usize].push(*per_day.get(&d).unwrap_or(&0.0));
            }
            let resid: f64 = by_wd.iter().filter(|v| !v.is_empty()).map(|v| {
                let m = v.iter().sum::<f64>() / v.len() as f64;
                v.iter().map(|x| (x - m).powi(2)).sum::<f64>()
            }).sum();
            let naive = resid / f64::from(hi - lo);
            prop_assert!((a.daily_residual_variance(lo, hi) - naive).abs() < 1e-6 * (1.0 + naive));
        }
    }
}
