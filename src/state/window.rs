//! Compact per-customer rolling windows, bucketed by UTC day of event time.
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

/// Sparse daily activity buckets, sorted by day. Exactly sized: a new day
/// reallocates, which is rare next to the events that land on a known day.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Activity {
    buckets: Box<[DayBucket]>,
}

impl Activity {
    /// Adds one event on `day`; `today` is the newest day seen, for pruning.
    pub fn add(&mut self, day: i32, quantity: f64, today: i32) {
        if day <= today - HORIZON_DAYS {
            return; // older than anything a window looks at
        }
        let new = DayBucket {
            day,
            events: 1,
            quantity: quantity as f32,
        };
        let n = self.buckets.len();
        match self.buckets.last_mut() {
            Some(b) if b.day == day => {
                b.events = b.events.saturating_add(1);
                b.quantity += quantity as f32;
            }
            Some(b) if b.day < day => self.insert(n, new),
            None => self.insert(0, new),
            Some(_) => match self.buckets.binary_search_by_key(&day, |b| b.day) {
                Ok(i) => {
                    self.buckets[i].events = self.buckets[i].events.saturating_add(1);
                    self.buckets[i].quantity += quantity as f32;
                }
                Err(i) => self.insert(i, new),
            },
        }
        self.prune(today);
    }

    fn insert(&mut self, i: usize, b: DayBucket) {
        let mut v = Vec::with_capacity(self.buckets.len() + 1);
        v.extend_from_slice(&self.buckets[..i]);
        v.push(b);
        v.extend_from_slice(&self.buckets[i..]);
        self.buckets = v.into_boxed_slice();
    }

    /// Drops buckets that fell out of the horizon.
    pub fn prune(&mut self, today: i32) {
        let keep_from = today - HORIZON_DAYS + 1;
        let n = self
            .buckets
            .iter()
            .take_while(|b| b.day < keep_from)
            .count();
        if n > 0 {
            self.buckets = self.buckets[n..].into();
        }
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

    fn range(&self, from: i32, to: i32) -> impl Iterator<Item = &DayBucket> {
        let start = self.buckets.partition_point(|b| b.day < from);
        self.buckets[start..].iter().take_while(move |b| b.day < to)
    }

    /// Buckets held.
    pub fn buckets(&self) -> &[DayBucket] {
        &self.buckets
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<DayBucket>()
    }
}

/// Distinct active users by day, exact over the last 64 days.
///
/// One allocation, created by the first user: `[anchor, users, then per
/// user: hash, low and high half of its day bitmap]`, with some room at the
/// end once there are more than a few users. The anchor is the day of bit 0
/// of every bitmap (the newest day seen); bit i set = active on day
/// `anchor - i`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Seats {
    data: Box<[u32]>,
}

/// Most users tracked per customer; beyond it new users are not counted.
pub const MAX_SEATS: usize = 4096;

/// Words before the first user in [`Seats`].
const HEAD: usize = 2;
/// Users stored without spare room.
const EXACT_USERS: usize = 8;

impl Seats {
    fn anchor(&self) -> i32 {
        self.data.first().map_or(0, |a| *a as i32)
    }

    fn len(&self) -> usize {
        self.data.get(1).map_or(0, |n| *n as usize)
    }

    fn bits(&self, i: usize) -> u64 {
        let j = HEAD + 3 * i;
        u64::from(self.data[j + 1]) | (u64::from(self.data[j + 2]) << 32)
    }

    fn set(&mut self, i: usize, hash: u32, bits: u64) {
        let j = HEAD + 3 * i;
        self.data[j] = hash;
        self.data[j + 1] = bits as u32;
        self.data[j + 2] = (bits >> 32) as u32;
    }

    fn users(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        (0..self.len()).map(|i| (self.data[HEAD + 3 * i], self.bits(i)))
    }

    /// True once a user was added (even if all have aged out since).
    pub fn is_tracking(&self) -> bool {
        !self.data.is_empty()
    }

    /// Marks `user` active on `day`.
    pub fn add(&mut self, user_hash: u32, day: i32) {
        if self.data.is_empty() {
            self.data = vec![0u32; HEAD].into_boxed_slice();
        }
        if self.len() == 0 && self.anchor() == 0 {
            self.data[0] = day as u32;
        }
        let anchor = self.anchor();
        if day > anchor {
            let shift = (day - anchor) as u32;
            // Shift every bitmap and drop the users left without a day, in order.
            let mut kept = 0;
            for i in 0..self.len() {
                let bits = self.bits(i);
                let bits = if shift >= 64 { 0 } else { bits << shift };
                if bits != 0 {
                    let hash = self.data[HEAD + 3 * i];
                    self.set(kept, hash, bits);
                    kept += 1;
                }
            }
            self.data[1] = kept as u32;
            self.data[0] = day as u32;
        }
        let back = self.anchor() - day;
        if back >= 64 {
            return;
        }
        let bit = 1u64 << back;
        let n = self.len();
        if let Some(i) = (0..n).find(|&i| self.data[HEAD + 3 * i] == user_hash) {
            let bits = self.bits(i) | bit;
            self.set(i, user_hash, bits);
        } else if n < MAX_SEATS {
            if HEAD + 3 * (n + 1) > self.data.len() {
                let room = if n < EXACT_USERS { n + 1 } else { n + n / 2 };
                let mut grown = vec![0u32; HEAD + 3 * room];
                grown[..self.data.len()].copy_from_slice(&self.data);
                self.data = grown.into_boxed_slice();
            }
            self.set(n, user_hash, bit);
            self.data[1] = (n + 1) as u32;
        }
    }

    /// Distinct users active in each of the 9 weeks before `today`: index
    /// `k` is the week `[today - 7 (k + 1), today - 7 k)`, so 0 is the current
    /// week. One pass over the users instead of one per week.
    pub fn distinct_weeks(&self, today: i32) -> [u32; 9] {
        let masks: [u64; 9] =
            std::array::from_fn(|k| self.mask(today - 7 * (k as i32 + 1), today - 7 * k as i32));
        let mut out = [0u32; 9];
        let n = self.len();
        for u in self.data[HEAD..HEAD + 3 * n].chunks_exact(3) {
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
        self.data.len() * std::mem::size_of::<u32>()
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
        let mut a = Activity::default();
        a.add(100, 1.0, 100);
        a.add(98, 2.0, 100);
        a.add(99, 1.0, 100);
        a.add(98, 1.0, 100);
        assert_eq!(
            a.buckets().iter().map(|b| b.day).collect::<Vec<_>>(),
            vec![98, 99, 100]
        );
        assert_eq!(a.events(98, 99), 2);
        assert_eq!(a.quantity(98, 101), 5.0);
        a.add(100 + HORIZON_DAYS, 1.0, 100 + HORIZON_DAYS);
        assert_eq!(a.events(0, 1000), 1, "old days pruned");
    }

    #[test]
    fn seats_count_distinct_users_per_window() {
        let mut s = Seats::default();
        s.add(1, 10);
        s.add(2, 10);
        s.add(1, 12);
        s.add(3, 20);
        assert_eq!(s.distinct(10, 11), 2);
        assert_eq!(s.distinct(10, 21), 3);
        assert_eq!(s.distinct(11, 20), 1);
        assert_eq!(s.distinct(13, 20), 0);
        s.add(4, 90); // everything earlier falls out of the 64-day bitmap
        assert_eq!(s.distinct(0, 100), 1);
    }

    proptest! {
        /// The windows agree with a naive recompute over the raw events.
        #[test]
        fn windows_match_naive_recompute(
            evs in proptest::collection::vec((0i32..120, 0u32..6, 0.0f64..10.0), 1..300),
            from_back in 1i32..63, len in 1i32..40,
        ) {
            let mut a = Activity::default();
            let mut s = Seats::default();
            let mut today = i32::MIN;
            for &(day, user, q) in &evs {
                today = today.max(day);
                a.add(day, q, today);
                s.add(user, day);
            }
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
