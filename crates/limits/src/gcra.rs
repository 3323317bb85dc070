//! The GCRA arithmetic, shared by the in-memory limiter and mirrored by the Lua script.
//!
//! Each key holds a theoretical arrival time (TAT): when the bucket would be empty
//! again if nothing more came. A unit may pass at `TAT - tolerance`; charging it
//! moves the TAT one emission interval past `max(TAT, now)`. Several buckets are
//! charged together: the request passes when *all* of them allow it.
//!
//! Charging from `now` rather than from the (possibly later) pass time matters only
//! for the buckets that did not hold the request back: a payer who floods is delayed
//! by their own bucket, and the chain's bucket counts each of their units once, at
//! its cost, instead of being pushed out to the flooder's last reservation (which
//! would make one payer's flood delay everybody on the chain).

use crate::{Bucket, Decision, Grant, Mode, Rate};

/// A theoretical arrival time, ms since the epoch.
pub type Tat = i64;

/// Decides for `buckets` whose current TATs are `tats` (same order; `None` for a key
/// never seen or expired) and returns the decision and the new TATs to store (`None`
/// when nothing is charged).
pub(crate) fn decide(
    buckets: &[Bucket],
    tats: &[Option<Tat>],
    now_ms: i64,
    mode: Mode,
) -> (Decision, Option<Vec<Tat>>) {
    let current: Vec<Tat> = tats
        .iter()
        .map(|t| t.unwrap_or(now_ms).max(now_ms))
        .collect();
    let at_ms = buckets
        .iter()
        .zip(&current)
        .map(|(b, tat)| tat - b.rate.tolerance_ms())
        .fold(now_ms, i64::max);
    if at_ms > now_ms && mode == Mode::TryNow {
        return (
            Decision {
                at_ms,
                charged: false,
            },
            None,
        );
    }
    let next = buckets
        .iter()
        .zip(&current)
        .map(|(b, tat)| tat.saturating_add(b.rate.emission_ms))
        .collect();
    (
        Decision {
            at_ms,
            charged: true,
        },
        Some(next),
    )
}

/// Leases up to `want` units of one bucket at once: as many as are free *now* (never
/// a future unit), charged together. Returns the units granted (0 when none is free)
/// with the time the next unit frees up in that case, and the new TAT to store
/// (`None` when nothing is charged). Mirrored by the lease script in Redis.
pub(crate) fn lease(rate: Rate, tat: Option<Tat>, now_ms: i64, want: u32) -> (Grant, Option<Tat>) {
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let emission = rate.emission_ms.max(1);
    // Unit k (from 0) passes at `tat + k * emission - tolerance`; count those <= now.
    let free = (now_ms + rate.tolerance_ms() - tat).div_euclid(emission) + 1;
    let units = free.clamp(0, i64::from(want)) as u32;
    if units == 0 {
        let at_ms = tat - rate.tolerance_ms();
        return (Grant { units, at_ms }, None);
    }
    let next = tat.saturating_add(emission.saturating_mul(i64::from(units)));
    (
        Grant {
            units,
            at_ms: now_ms,
        },
        Some(next),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_spaced_by_the_emission_interval() {
        let b = [Bucket::new(
            "k",
            Rate {
                emission_ms: 100,
                burst: 3,
            },
        )];
        let mut tat = None;
        let mut ats = Vec::new();
        for _ in 0..5 {
            let (d, next) = decide(&b, &[tat], 1_000, Mode::Reserve);
            tat = next.map(|n| n[0]);
            ats.push(d.at_ms);
        }
        assert_eq!(ats, [1_000, 1_000, 1_000, 1_100, 1_200]);
    }

    #[test]
    fn try_now_charges_nothing_when_refused() {
        let b = [Bucket::new(
            "k",
            Rate {
                emission_ms: 100,
                burst: 1,
            },
        )];
        let (d, next) = decide(&b, &[None], 0, Mode::TryNow);
        assert!(d.charged && d.at_ms == 0);
        let tat = next.map(|n| n[0]);
        let (d, next) = decide(&b, &[tat], 10, Mode::TryNow);
        assert_eq!((d.at_ms, d.charged, next), (100, false, None));
    }

    #[test]
    fn the_strictest_bucket_decides_and_all_are_charged() {
        let b = [
            Bucket::new(
                "payer",
                Rate {
                    emission_ms: 1_000,
                    burst: 1,
                },
            ),
            Bucket::new(
                "chain",
                Rate {
                    emission_ms: 10,
                    burst: 100,
                },
            ),
        ];
        let (d, next) = decide(&b, &[Some(5_000), None], 0, Mode::Reserve);
        assert_eq!(d.at_ms, 5_000);
        assert_eq!(next, Some(vec![6_000, 10]));
    }

    #[test]
    fn a_lease_takes_only_the_units_free_now() {
        let rate = Rate {
            emission_ms: 100,
            burst: 5,
        };
        // A fresh bucket holds its burst: 5 free, 3 asked.
        let (g, tat) = lease(rate, None, 1_000, 3);
        assert_eq!((g.units, tat), (3, Some(1_300)));
        // 2 left of the burst, 10 asked.
        let (g, tat) = lease(rate, tat, 1_000, 10);
        assert_eq!((g.units, tat), (2, Some(1_500)));
        // Empty: nothing charged, the next unit frees at TAT - tolerance.
        let (g, next) = lease(rate, tat, 1_000, 10);
        assert_eq!((g.units, g.at_ms, next), (0, 1_100, None));
        // 250 ms later two units have come back (and a half: not yet the third).
        let (g, _) = lease(rate, tat, 1_250, 10);
        assert_eq!(g.units, 2);
    }

    #[test]
    fn a_lease_agrees_with_one_by_one_decisions() {
        let rate = Rate {
            emission_ms: 7,
            burst: 13,
        };
        let b = [Bucket::new("k", rate)];
        for start in [None, Some(40), Some(95), Some(200)] {
            let mut tat = start;
            let mut one_by_one = 0;
            loop {
                let (d, next) = decide(&b, &[tat], 100, Mode::TryNow);
                if !d.charged {
                    break;
                }
                one_by_one += 1;
                tat = next.map(|n| n[0]);
            }
            let (g, leased_tat) = lease(rate, start, 100, u32::MAX);
            assert_eq!(g.units, one_by_one, "start {start:?}");
            assert_eq!(
                leased_tat.or(start.map(|t| t.max(100))),
                tat.map(|t| t.max(100))
            );
        }
    }
}
