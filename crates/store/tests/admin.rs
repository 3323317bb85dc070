//! Conformance suite of the admin store (accounts, TOTP steps, lockouts, sessions with
//! rotating refresh tokens, API keys) and of the audit log's tamper evidence: every
//! test is written once against `&dyn Store` and run on SQLite (a fresh temporary file) and on PostgreSQL (a fresh schema on the
//! server at `UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`,
//! dropped afterwards). An unreachable PostgreSQL fails the PostgreSQL tests.

#![allow(clippy::unwrap_used)]

use ubtc_core::Timestamp;
use ubtc_store::*;

mod common;
use common::{on_both_backends, Harness, Raw};

const T0: Timestamp = Timestamp(1_700_000_000_000);

on_both_backends!(
    users_are_unique_and_disable_revokes_sessions,
    totp_steps_are_consumed_once,
    login_failures_lock_and_expire,
    refresh_tokens_rotate_and_reuse_revokes,
    concurrent_rotation_has_one_winner,
    api_keys,
    disabling_the_owner_revokes_its_keys,
    login_attempts_are_reserved_atomically,
    audit_tampering_is_detected,
    password_change_revokes_other_sessions,
    two_admins_disabling_each_other_leave_one,
    totp_enrolment_happens_once,
);

fn new_user(name: &str, role: &str) -> NewAdminUser {
    NewAdminUser {
        username: name.to_owned(),
        role: role.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        totp_secret: Some("JBSWY3DPEHPK3PXP".to_owned()),
    }
}

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

async fn session(store: &dyn Store, user: uuid::Uuid, token: &str) -> uuid::Uuid {
    store
        .create_admin_session(user, token, at(3_600_000), at(86_400_000), T0)
        .await
        .unwrap()
}

async fn users_are_unique_and_disable_revokes_sessions(h: &Harness) {
    let s = h.store.as_ref();
    let alice = s
        .create_admin_user(&new_user("alice", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .create_admin_user(&new_user("alice", "auditor"), T0)
        .await
        .unwrap()
        .is_none());
    s.create_admin_user(&new_user("bob", "auditor"), at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.get_admin_user("alice").await.unwrap().unwrap(), alice);
    assert_eq!(
        s.get_admin_user_by_id(alice.id).await.unwrap().unwrap(),
        alice
    );
    assert!(s.get_admin_user("carol").await.unwrap().is_none());
    let names: Vec<String> = s
        .list_admin_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    // The hash never shows in Debug output.
    assert!(!format!("{alice:?}").contains("argon2"));

    let sid = session(s, alice.id, "h-alice").await;
    assert!(s.admin_session_active(sid, at(1)).await.unwrap());
    assert!(!s.admin_session_active(sid, at(86_400_000)).await.unwrap());
    // Alice is the only admin: she stays enabled, her session lives on.
    assert_eq!(
        s.disable_admin_user("alice", at(2)).await.unwrap(),
        DisableOutcome::LastAdmin
    );
    assert!(s.admin_session_active(sid, at(2)).await.unwrap());
    s.create_admin_user(&new_user("root", "admin"), at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.disable_admin_user("alice", at(2)).await.unwrap(),
        DisableOutcome::Disabled
    );
    assert_eq!(
        s.disable_admin_user("alice", at(3)).await.unwrap(),
        DisableOutcome::NotFound
    );
    assert_eq!(
        s.disable_admin_user("nobody", at(3)).await.unwrap(),
        DisableOutcome::NotFound
    );
    // Auditors and operators are not counted: any of them can be disabled.
    assert_eq!(
        s.disable_admin_user("bob", at(3)).await.unwrap(),
        DisableOutcome::Disabled
    );
    assert!(!s.admin_session_active(sid, at(4)).await.unwrap());
    assert_eq!(
        s.get_admin_user("alice")
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        Some(at(2))
    );
    // A disabled user's refresh token no longer works, and nothing changes.
    assert_eq!(
        s.rotate_refresh_token("h-alice", "h-next", at(3_600_000), at(5))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

async fn totp_steps_are_consumed_once(h: &Harness) {
    let s = h.store.as_ref();
    let u = s
        .create_admin_user(&new_user("op", "operator"), T0)
        .await
        .unwrap()
        .unwrap();
    assert!(s.consume_totp_step(u.id, 10).await.unwrap());
    assert!(!s.consume_totp_step(u.id, 10).await.unwrap());
    assert!(!s.consume_totp_step(u.id, 9).await.unwrap());
    assert!(s.consume_totp_step(u.id, 11).await.unwrap());
    // Concurrent logins with one code: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store.consume_totp_step(u.id, 12).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(
        s.get_admin_user("op")
            .await
            .unwrap()
            .unwrap()
            .totp_last_step,
        Some(12)
    );
}

async fn login_failures_lock_and_expire(h: &Harness) {
    let s = h.store.as_ref();
    let policy = LockoutPolicy {
        max_failures: 3,
        window_ms: 60_000,
        lockout_ms: 300_000,
    };
    for (i, expect_lock) in [(0, false), (1, false), (2, true)] {
        let f = s
            .record_login_failure("user:alice", &policy, at(i * 1000))
            .await
            .unwrap();
        assert_eq!(f.failures, u32::try_from(i + 1).unwrap());
        assert_eq!(f.locked_until.is_some(), expect_lock, "failure {i}");
    }
    assert_eq!(
        s.login_locked_until("user:alice", at(3000)).await.unwrap(),
        Some(at(302_000))
    );
    assert_eq!(
        s.login_locked_until("user:bob", at(3000)).await.unwrap(),
        None
    );
    assert_eq!(
        s.login_locked_until("user:alice", at(302_000))
            .await
            .unwrap(),
        None
    );
    // After the window the counter starts again (and the old lock has run out).
    let f = s
        .record_login_failure("user:alice", &policy, at(400_000))
        .await
        .unwrap();
    assert_eq!(f.failures, 1);
    s.clear_login_failures("user:alice").await.unwrap();
    let f = s
        .record_login_failure("user:alice", &policy, at(400_001))
        .await
        .unwrap();
    assert_eq!((f.failures, f.locked_until), (1, None));
}

async fn refresh_tokens_rotate_and_reuse_revokes(h: &Harness) {
    let s = h.store.as_ref();
    let u = s
        .create_admin_user(&new_user("alice", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    let sid = session(s, u.id, "t1").await;
    match s
        .rotate_refresh_token("t1", "t2", at(3_600_000), at(10))
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated { user, session_id } => {
            assert_eq!((user.id, session_id), (u.id, sid));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.rotate_refresh_token("t2", "t3", at(3_600_000), at(20))
            .await
            .unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    assert_eq!(
        s.rotate_refresh_token("unknown", "x", at(3_600_000), at(20))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // t1 again: somebody kept a copy. The family is revoked, t3 included.
    assert_eq!(
        s.rotate_refresh_token("t1", "t4", at(3_600_000), at(30))
            .await
            .unwrap(),
        RefreshOutcome::Reused { session_id: sid }
    );
    assert!(!s.admin_session_active(sid, at(31)).await.unwrap());
    assert_eq!(
        s.rotate_refresh_token("t3", "t5", at(3_600_000), at(40))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    // An expired token is refused and stays unused (presenting it later is still
    // "invalid", not "reused").
    let sid2 = s
        .create_admin_session(u.id, "e1", at(100), at(86_400_000), T0)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            s.rotate_refresh_token("e1", "e2", at(3_600_000), at(200))
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        );
    }
    assert!(s.admin_session_active(sid2, at(201)).await.unwrap());
    assert!(s
        .revoke_admin_session(sid2, "logout", at(202))
        .await
        .unwrap());
    assert!(!s
        .revoke_admin_session(sid2, "logout", at(203))
        .await
        .unwrap());
    assert!(!s.admin_session_active(sid2, at(204)).await.unwrap());
}

async fn concurrent_rotation_has_one_winner(h: &Harness) {
    let u = h
        .store
        .create_admin_user(&new_user("alice", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    session(h.store.as_ref(), u.id, "c1").await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .rotate_refresh_token("c1", &format!("c2-{i}"), at(3_600_000), at(10))
                .await
                .unwrap()
        }));
    }
    let mut rotated = 0;
    for t in tasks {
        match t.await.unwrap() {
            RefreshOutcome::Rotated { .. } => rotated += 1,
            RefreshOutcome::Reused { .. } | RefreshOutcome::Invalid => {}
        }
    }
    assert_eq!(rotated, 1);
}

async fn api_keys(h: &Harness) {
    let s = h.store.as_ref();
    let k = s
        .create_api_key(
            &NewApiKey {
                name: "ci".into(),
                key_hash: "abc".into(),
                roles: vec!["operator".into(), "auditor".into()],
                created_by: "alice".into(),
                owner_id: None,
                expires_at: Some(at(10)),
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(s.find_api_key("abc").await.unwrap().unwrap(), k);
    assert_eq!(k.roles, ["operator", "auditor"]);
    assert!(s.find_api_key("abd").await.unwrap().is_none());
    assert_eq!(s.list_api_keys().await.unwrap(), vec![k.clone()]);
    assert!(s.revoke_api_key(k.id, at(1)).await.unwrap());
    assert!(!s.revoke_api_key(k.id, at(2)).await.unwrap());
    assert!(!s.revoke_api_key(uuid::Uuid::new_v4(), at(2)).await.unwrap());
    assert_eq!(
        s.find_api_key("abc").await.unwrap().unwrap().revoked_at,
        Some(at(1))
    );
    assert_eq!(k.expires_at, Some(at(10)));
    assert!(k.usable(at(9)) && !k.usable(at(10)));
}

/// A key belongs to the account that created it: disabling the account revokes the
/// key in the same transaction; a key of the system (no owner) stays.
async fn disabling_the_owner_revokes_its_keys(h: &Harness) {
    let s = h.store.as_ref();
    let u = s
        .create_admin_user(&new_user("alice", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    let key = |hash: &str, owner: Option<uuid::Uuid>| NewApiKey {
        name: hash.into(),
        key_hash: hash.into(),
        roles: vec!["admin".into()],
        created_by: "alice".into(),
        owner_id: owner,
        expires_at: None,
    };
    let owned = s
        .create_api_key(&key("owned", Some(u.id)), T0)
        .await
        .unwrap();
    let system = s.create_api_key(&key("system", None), T0).await.unwrap();
    assert_eq!(owned.owner_id, Some(u.id));
    s.create_admin_user(&new_user("root", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.disable_admin_user("alice", at(5)).await.unwrap(),
        DisableOutcome::Disabled
    );
    let owned = s.find_api_key("owned").await.unwrap().unwrap();
    assert_eq!(owned.revoked_at, Some(at(5)));
    assert!(!owned.usable(at(6)));
    let system = s.find_api_key(&system.key_hash).await.unwrap().unwrap();
    assert!(system.usable(at(6)));
}

/// Attempts are reserved before the password check: of 20 concurrent reservations
/// with a limit of 5 exactly 5 are admitted; during the lockout attempts are refused
/// without extending it; a released attempt lifts the lockout it set; old rows are
/// pruned.
async fn login_attempts_are_reserved_atomically(h: &Harness) {
    let s = h.store.clone();
    let policy = LockoutPolicy {
        max_failures: 5,
        window_ms: 60_000,
        lockout_ms: 120_000,
    };
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.reserve_login_attempt("user:alice", &policy, at(1000))
                .await
                .unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap().admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(
        s.login_locked_until("user:alice", at(2000)).await.unwrap(),
        Some(at(121_000))
    );
    // Refused during the lockout, and the lockout is not renewed.
    let a = s
        .reserve_login_attempt("user:alice", &policy, at(100_000))
        .await
        .unwrap();
    assert!(!a.admitted);
    assert_eq!(a.locked_until, Some(at(121_000)));
    // After it the count restarts.
    let a = s
        .reserve_login_attempt("user:alice", &policy, at(121_000))
        .await
        .unwrap();
    assert_eq!((a.admitted, a.failures, a.locked_until), (true, 1, None));

    // Releasing the attempt that set a lockout lifts it.
    for i in 0..5 {
        let a = s
            .reserve_login_attempt("user:bob", &policy, at(i))
            .await
            .unwrap();
        assert!(a.admitted);
    }
    assert!(s
        .login_locked_until("user:bob", at(10))
        .await
        .unwrap()
        .is_some());
    s.release_login_attempt("user:bob", &policy).await.unwrap();
    assert_eq!(
        s.login_locked_until("user:bob", at(10)).await.unwrap(),
        None
    );
    let a = s
        .reserve_login_attempt("user:bob", &policy, at(11))
        .await
        .unwrap();
    assert_eq!((a.admitted, a.failures), (true, 5));

    // Pruning: rows whose window passed and that hold no running lockout.
    s.reserve_login_attempt("user:old", &policy, at(0))
        .await
        .unwrap();
    let pruned = s
        .prune_login_failures(at(500_000 - 60_000), at(500_000))
        .await
        .unwrap();
    assert_eq!(pruned, 3, "alice, bob and old are all past their window");
    s.reserve_login_attempt("user:new", &policy, at(500_000))
        .await
        .unwrap();
    assert_eq!(
        s.prune_login_failures(at(500_000 - 60_000), at(500_000))
            .await
            .unwrap(),
        0
    );
}

fn entry(action: &str, new_value: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor: "alice".into(),
        action: action.into(),
        target: Some("user:bob".into()),
        old_value: None,
        new_value: Some(new_value.into()),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("test".into()),
    }
}

/// The application cannot change history (the triggers refuse), and a change made
/// behind its back (here: triggers disabled by the database owner, as an intruder
/// with superuser rights could) is found by the chain check, which names the record.
async fn audit_tampering_is_detected(h: &Harness) {
    let s = h.store.as_ref();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            s.append_audit(&entry("user.create", &format!("{{\"n\":{i}}}")), at(i))
                .await
                .unwrap()
                .id,
        );
    }
    assert_eq!(
        s.verify_audit_chain().await.unwrap(),
        AuditCheck {
            entries: 4,
            first_broken: None
        }
    );
    let target = ids[2];
    let update = "UPDATE audit_logs SET new_value = '{\"n\":99}' WHERE id = $1";
    match &h.raw {
        Raw::Sqlite(pool) => {
            assert!(sqlx::query(update)
                .bind(target)
                .execute(pool)
                .await
                .is_err());
            assert!(sqlx::query("DELETE FROM audit_logs WHERE id = $1")
                .bind(target)
                .execute(pool)
                .await
                .is_err());
            sqlx::query("DROP TRIGGER audit_logs_no_update")
                .execute(pool)
                .await
                .unwrap();
            sqlx::query(update)
                .bind(target)
                .execute(pool)
                .await
                .unwrap();
        }
        Raw::Postgres(pool) => {
            assert!(sqlx::query(update)
                .bind(target)
                .execute(pool)
                .await
                .is_err());
            assert!(sqlx::query("DELETE FROM audit_logs WHERE id = $1")
                .bind(target)
                .execute(pool)
                .await
                .is_err());
            // As the table's owner (the test role is a superuser); the application's
            // role in production does not own the table.
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_no_update")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(update)
                .bind(target)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_no_update")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    // The chain check stops at the first record that does not match.
    assert_eq!(
        s.verify_audit_chain().await.unwrap().first_broken,
        Some(target)
    );
}

async fn password_change_revokes_other_sessions(h: &Harness) {
    let s = h.store.as_ref();
    let u = s
        .create_admin_user(&new_user("alice", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    let here = session(s, u.id, "p1").await;
    let elsewhere = session(s, u.id, "p2").await;
    assert!(s
        .set_admin_password(u.id, "$argon2id$new", Some(here), at(1))
        .await
        .unwrap());
    assert_eq!(
        s.get_admin_user("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    assert!(s.admin_session_active(here, at(2)).await.unwrap());
    assert!(!s.admin_session_active(elsewhere, at(2)).await.unwrap());
    // Without a session to keep, all end; a disabled or unknown user changes nothing.
    assert!(s
        .set_admin_password(u.id, "$argon2id$newer", None, at(3))
        .await
        .unwrap());
    assert!(!s.admin_session_active(here, at(4)).await.unwrap());
    assert!(!s
        .set_admin_password(uuid::Uuid::new_v4(), "$x", None, at(5))
        .await
        .unwrap());
    s.create_admin_user(&new_user("root", "admin"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.disable_admin_user("alice", at(6)).await.unwrap(),
        DisableOutcome::Disabled
    );
    assert!(!s
        .set_admin_password(u.id, "$argon2id$again", None, at(7))
        .await
        .unwrap());
    assert_eq!(
        s.get_admin_user("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$newer"
    );
}

/// Admins disable each other at the same moment: the check and the change are
/// serialised, so exactly one admin remains, whatever the interleaving (five rounds,
/// each racing every enabled admin's disable).
async fn two_admins_disabling_each_other_leave_one(h: &Harness) {
    for round in 0..5 {
        let s = h.store.clone();
        for name in [format!("a{round}"), format!("b{round}")] {
            s.create_admin_user(&new_user(&name, "admin"), T0)
                .await
                .unwrap()
                .unwrap();
        }
        let enabled = |users: Vec<AdminUser>| -> Vec<String> {
            users
                .into_iter()
                .filter(|u| u.role == "admin" && u.disabled_at.is_none())
                .map(|u| u.username)
                .collect()
        };
        let racing = enabled(s.list_admin_users().await.unwrap());
        assert!(racing.len() >= 2);
        let tasks: Vec<_> = racing
            .iter()
            .map(|name| {
                let (s, name) = (s.clone(), name.clone());
                tokio::spawn(async move { s.disable_admin_user(&name, at(1)).await.unwrap() })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let disabled = outcomes
            .iter()
            .filter(|o| **o == DisableOutcome::Disabled)
            .count();
        assert_eq!(disabled, racing.len() - 1, "round {round}: {outcomes:?}");
        assert_eq!(
            enabled(s.list_admin_users().await.unwrap()).len(),
            1,
            "round {round}"
        );
    }
}

/// An account without a second factor is enrolled once: the second enrolment (another
/// secret) changes nothing, and neither does one for a disabled account.
async fn totp_enrolment_happens_once(h: &Harness) {
    let s = h.store.as_ref();
    let mut fresh = new_user("newbie", "operator");
    fresh.totp_secret = None;
    let u = s.create_admin_user(&fresh, T0).await.unwrap().unwrap();
    assert_eq!(u.totp_secret, None);
    assert!(s
        .enrol_admin_totp(u.id, "enc:v1:first", "$argon2id$mine", 42)
        .await
        .unwrap());
    assert!(!s
        .enrol_admin_totp(u.id, "enc:v1:second", "$argon2id$theirs", 43)
        .await
        .unwrap());
    let now = s.get_admin_user("newbie").await.unwrap().unwrap();
    assert_eq!(now.totp_secret.as_deref(), Some("enc:v1:first"));
    assert_eq!(now.password_hash, "$argon2id$mine");
    assert_eq!(now.totp_last_step, Some(42));
    // The step used to enrol cannot log in again.
    assert!(!s.consume_totp_step(u.id, 42).await.unwrap());
    assert!(!s
        .enrol_admin_totp(uuid::Uuid::new_v4(), "enc:v1:x", "$x", 1)
        .await
        .unwrap());
    let mut other = new_user("later", "auditor");
    other.totp_secret = None;
    let o = s.create_admin_user(&other, T0).await.unwrap().unwrap();
    assert_eq!(
        s.disable_admin_user("later", at(1)).await.unwrap(),
        DisableOutcome::Disabled
    );
    assert!(!s.enrol_admin_totp(o.id, "enc:v1:x", "$x", 1).await.unwrap());
}
