//! Leader election between two replicas on the fake API server's Lease: one holds it, the other
//! waits; the other takes over when the holder gives it up or stops renewing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, fake_api, lease_path};
use hmq_operator::leader::{self, LEASE_NAME, Leadership, Timing};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "hmq-system";

/// The shortest lease kube-lease-manager allows: 2 s, renewed 1 s before expiry.
fn timing() -> Timing {
    Timing::new(leader::MIN_LEASE_SECONDS)
}

fn replica(
    client: Client,
    identity: &'static str,
    stop: &CancellationToken,
) -> JoinHandle<Option<Leadership>> {
    let stop = stop.clone();
    tokio::spawn(async move {
        leader::acquire(client, NS, identity, timing(), &stop)
            .await
            .unwrap()
    })
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_when_it_releases() {
    let (_, fake) = fake_api();
    let stop = CancellationToken::new();
    let mut a = replica(connect(&fake, 1), "a", &stop);
    let mut b = replica(connect(&fake, 2), "b", &stop);

    // Exactly one acquires.
    let (first, mut waiting, leader_id, standby_id) = tokio::select! {
        r = &mut a => (r.unwrap().expect("a leads"), b, "a", "b"),
        r = &mut b => (r.unwrap().expect("b leads"), a, "b", "a"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("nobody acquired the lease"),
    };
    assert_eq!(
        fake.lock().unwrap().lease_holder(NS, LEASE_NAME).as_deref(),
        Some(leader_id)
    );
    // The holder renews: three lease durations later it still holds it and the other waits.
    tokio::time::sleep(Duration::from_secs(3 * timing().duration)).await;
    assert!(
        !waiting.is_finished(),
        "{standby_id} acquired a lease {leader_id} holds"
    );
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.lease_holder(NS, LEASE_NAME).as_deref(), Some(leader_id));
        let renewals = f
            .calls
            .iter()
            .filter(|c| c.method == "PATCH" && c.path == lease_path(NS, LEASE_NAME))
            .filter(|c| c.body["spec"]["renewTime"].is_string())
            .count();
        assert!(renewals >= 3, "{renewals} lease writes with a renewTime");
    }

    // The holder gives the lease up: the other takes it, within one lease duration and a bit.
    let released = Instant::now();
    first.release().await;
    let next = tokio::time::timeout(Duration::from_secs(timing().duration + 4), &mut waiting)
        .await
        .expect("the standby did not take over the released lease")
        .unwrap()
        .expect("the standby stopped instead of leading");
    let took = released.elapsed();
    let f = fake.lock().unwrap();
    assert_eq!(f.lease_holder(NS, LEASE_NAME).as_deref(), Some(standby_id));
    assert_eq!(
        f.object(&lease_path(NS, LEASE_NAME))["spec"]["leaseTransitions"],
        2
    );
    drop(f);
    eprintln!("standby took over {took:?} after the release");
    drop(next);
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let (_, fake) = fake_api();
    let stop = CancellationToken::new();
    let a = leader::acquire(connect(&fake, 1), NS, "a", timing(), &stop)
        .await
        .unwrap()
        .expect("a leads an unheld lease");
    let mut a = a;
    let b = replica(connect(&fake, 2), "b", &stop);

    // A cannot renew any more; it has not been told it lost the lease.
    let cut = Instant::now();
    fake.lock().unwrap().cut.insert(1);
    let a_lost = tokio::spawn(async move {
        a.lost().await;
        Instant::now()
    });
    let b_led = tokio::spawn(async move {
        let lease = b.await.unwrap().expect("b leads");
        (Instant::now(), lease)
    });
    let bound = Duration::from_secs(timing().duration + 5);
    let a_lost = tokio::time::timeout(bound, a_lost)
        .await
        .expect("the cut-off leader never noticed it lost the lease")
        .unwrap();
    let (b_led, _lease) = tokio::time::timeout(bound, b_led)
        .await
        .expect("the standby did not take over the expired lease")
        .unwrap();
    assert_eq!(
        fake.lock().unwrap().lease_holder(NS, LEASE_NAME).as_deref(),
        Some("b")
    );
    // No two leaders at once: the old one stops before the new one starts.
    assert!(
        a_lost < b_led,
        "a stopped {:?} after the cut, b led {:?} after it",
        a_lost - cut,
        b_led - cut
    );
}

#[tokio::test]
async fn a_waiting_replica_stops_on_request() {
    let (_, fake) = fake_api();
    let stop = CancellationToken::new();
    let _a = leader::acquire(connect(&fake, 1), NS, "a", timing(), &stop)
        .await
        .unwrap()
        .expect("a leads");
    let b_stop = CancellationToken::new();
    let b = replica(connect(&fake, 2), "b", &b_stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b_stop.cancel();
    let b = tokio::time::timeout(Duration::from_secs(5), b)
        .await
        .expect("the waiting replica did not stop")
        .unwrap();
    assert!(b.is_none());
    assert_eq!(
        fake.lock().unwrap().lease_holder(NS, LEASE_NAME).as_deref(),
        Some("a")
    );
}

/// The fake's Lease semantics that kube-lease-manager relies on to settle a race: an apply of
/// a field another manager set to another value is a 409 Conflict.
#[tokio::test]
async fn the_fake_refuses_an_apply_that_takes_another_managers_field() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;
    use kube::api::{Patch, PatchParams, PostParams};
    let (client, _fake) = fake_api();
    let api = Api::<Lease>::namespaced(client, NS);
    let mut lease = Lease::default();
    lease.metadata.name = Some("l".into());
    api.create(&PostParams::default(), &lease).await.unwrap();
    let hold = |who: &str| {
        Patch::Apply(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {"holderIdentity": who}
        }))
    };
    api.patch("l", &PatchParams::apply("m-a"), &hold("a"))
        .await
        .unwrap();
    let err = api
        .patch("l", &PatchParams::apply("m-b"), &hold("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 409 && e.reason == "Conflict"),
        "{err}"
    );
    // Clearing the field (a strategic merge patch with null) frees it for the other manager.
    let clear = Patch::Strategic(serde_json::json!({"spec": {"holderIdentity": null}}));
    api.patch("l", &PatchParams::default(), &clear)
        .await
        .unwrap();
    let held = api
        .patch("l", &PatchParams::apply("m-b"), &hold("b"))
        .await
        .unwrap();
    assert_eq!(held.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // A write with a stale resourceVersion is refused.
    let stale = Patch::Merge(serde_json::json!({"metadata": {"resourceVersion": "1"}}));
    let err = api
        .patch("l", &PatchParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 409),
        "{err}"
    );
}
