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

use crate::{Bucket, Decision, Mode};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rate;

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
}
