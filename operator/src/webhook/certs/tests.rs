//! `plan` over time: first certificates, renewals at 2/3 of life, a CA
//! rotation that keeps the old CA trusted, and broken Secrets repaired.

use super::*;

const NOW: i64 = 1_800_000_000; // 2027-01-15
const DAY: i64 = 86_400;

fn names() -> Vec<String> {
    sans("raftcron-operator-webhook", "raftcron-system")
}

fn written(now: i64, m: &Material) -> (Material, Vec<&'static str>, i64) {
    match plan(now, m, &names(), &Lifetimes::default()).unwrap() {
        Decision {
            step: Step::Write { material, why },
            next_check,
        } => (material, why, next_check),
        d => panic!("expected a write at {now}, got {d:?}"),
    }
}

fn kept(now: i64, m: &Material) -> i64 {
    match plan(now, m, &names(), &Lifetimes::default()).unwrap() {
        Decision {
            step: Step::Keep,
            next_check,
        } => next_check,
        d => panic!("expected keep at {now}, got {d:?}"),
    }
}

/// The leaf verifies against the bundle for the service name, as a TLS
/// client (the API server) would check it.
fn trusted(m: &Material, now: i64) -> bool {
    let cas = certs(&m.ca_bundle);
    let leaf = &certs(&m.cert)[0];
    leaf.valid_at(now)
        && leaf
            .dns_names
            .contains(&"raftcron-operator-webhook.raftcron-system.svc".to_string())
        && cas.iter().any(|ca| ca.valid_at(now) && leaf.signed_by(ca))
}

#[test]
fn an_empty_secret_gets_a_ca_and_a_serving_certificate_for_the_service_names() {
    let (m, why, next) = written(NOW, &Material::default());
    assert!(why.contains(&"there is no CA"), "{why:?}");
    assert_eq!(certs(&m.ca_bundle).len(), 1);
    let ca = &certs(&m.ca_bundle)[0];
    assert!(ca.is_ca);
    assert_eq!(ca.not_after - NOW, 5 * 365 * DAY, "CA: five years");
    let leaf = &certs(&m.cert)[0];
    assert!(!leaf.is_ca);
    assert_eq!(leaf.not_after - NOW, 90 * DAY, "leaf: 90 days");
    let mut dns = leaf.dns_names.clone();
    dns.sort();
    let mut want = names();
    want.sort();
    assert_eq!(dns, want);
    assert!(trusted(&m, NOW));
    assert_eq!(
        public_key(&m.key),
        Some(leaf.public_key.clone()),
        "tls.key is the leaf's key"
    );
    // 2/3 of the leaf's life (which starts an hour back).
    assert_eq!(
        next,
        leaf.not_before + (leaf.not_after - leaf.not_before) * 2 / 3
    );
}

#[test]
fn what_was_written_is_kept_until_two_thirds_of_the_leafs_life() {
    let (m, _, next) = written(NOW, &Material::default());
    assert_eq!(kept(NOW, &m), next, "a second look finds nothing to do");
    assert_eq!(kept(NOW + 59 * DAY, &m), next);
    let (renewed, why, _) = written(NOW + 60 * DAY, &m);
    assert_eq!(
        why,
        ["the serving certificate is two thirds through its life"]
    );
    assert_eq!(
        renewed.ca_bundle, m.ca_bundle,
        "same CA: the caBundle does not change"
    );
    assert_eq!(renewed.ca_key, m.ca_key);
    assert_ne!(renewed.cert, m.cert);
    assert_ne!(renewed.key, m.key, "a new key with each certificate");
    assert!(trusted(&renewed, NOW + 60 * DAY));
}

#[test]
fn a_ca_two_thirds_through_its_life_is_joined_by_a_new_one_and_stays_trusted_until_it_expires() {
    let (first, _, _) = written(NOW, &Material::default());
    let old_ca = certs(&first.ca_bundle).remove(0);
    // Leaves renewed every 60 days, as the loop would, for 3 years and 4 months.
    let mut m = first;
    let mut t = NOW;
    let rotation = old_ca.renew_at();
    while t + 60 * DAY < rotation {
        t += 60 * DAY;
        m = written(t, &m).0;
        assert!(trusted(&m, t));
    }
    let (rotated, why, _) = written(rotation, &m);
    assert!(
        why.contains(&"the CA is two thirds through its life"),
        "{why:?}"
    );
    let bundle = certs(&rotated.ca_bundle);
    assert_eq!(bundle.len(), 2, "new and old CA");
    assert_ne!(
        bundle[0].public_key, old_ca.public_key,
        "the new CA comes first"
    );
    assert_eq!(bundle[1].public_key, old_ca.public_key);
    assert_eq!(
        public_key(&rotated.ca_key),
        Some(bundle[0].public_key.clone()),
        "ca.key signs from now on"
    );
    assert!(
        trusted(&rotated, rotation),
        "the served leaf still verifies throughout"
    );
    // The next leaf comes from the new CA; the old CA stays until it expires.
    let (next_leaf, _, _) = written(rotation + 60 * DAY, &rotated);
    assert!(certs(&next_leaf.cert)[0].signed_by(&certs(&next_leaf.ca_bundle)[0]));
    assert_eq!(certs(&next_leaf.ca_bundle).len(), 2);
    let after_expiry = old_ca.not_after + 1;
    let (pruned, why, _) = written(after_expiry, &next_leaf);
    assert!(
        why.contains(&"an expired or unusable CA left the bundle"),
        "{why:?}"
    );
    assert_eq!(certs(&pruned.ca_bundle).len(), 1);
    assert!(trusted(&pruned, after_expiry));
}

#[test]
fn a_leaf_for_other_names_or_from_a_foreign_ca_is_replaced_at_once() {
    let (m, _, _) = written(NOW, &Material::default());
    let other = plan(
        NOW,
        &Material::default(),
        &sans("other", "ns"),
        &Lifetimes::default(),
    )
    .unwrap();
    let Step::Write {
        material: foreign, ..
    } = other.step
    else {
        panic!()
    };
    // The other installation's leaf and key under our CA.
    let mixed = Material {
        cert: foreign.cert.clone(),
        key: foreign.key.clone(),
        ..m.clone()
    };
    let (fixed, why, _) = written(NOW, &mixed);
    assert!(
        why[0].starts_with("the serving certificate is missing, expired, for other names"),
        "{why:?}"
    );
    assert_eq!(fixed.ca_bundle, m.ca_bundle, "the CA is kept");
    assert!(trusted(&fixed, NOW));
    // A key that is not the certificate's.
    let wrong_key = Material {
        key: foreign.key,
        ..m.clone()
    };
    assert!(trusted(&written(NOW, &wrong_key).0, NOW));
}

#[test]
fn a_lost_ca_key_gets_a_new_ca_and_keeps_the_old_one_trusted_while_it_lasts() {
    let (m, _, _) = written(NOW, &Material::default());
    let lost = Material {
        ca_key: String::new(),
        ..m.clone()
    };
    let (fixed, why, _) = written(NOW + DAY, &lost);
    assert!(
        why.contains(&"no CA in the bundle has the stored key"),
        "{why:?}"
    );
    assert_eq!(certs(&fixed.ca_bundle).len(), 2);
    assert_eq!(
        fixed.cert, m.cert,
        "the served leaf is still good and is kept"
    );
    assert!(trusted(&fixed, NOW + DAY));
}

#[test]
fn garbage_in_the_secret_is_replaced_by_working_certificates() {
    let junk = Material {
        ca_bundle: "not a certificate".into(),
        ca_key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
        cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        key: String::new(),
    };
    let (m, _, _) = written(NOW, &junk);
    assert!(trusted(&m, NOW));
    kept(NOW, &m);
}

#[test]
fn secret_data_round_trips_through_the_four_keys() {
    let (m, _, _) = written(NOW, &Material::default());
    let data = m.to_secret();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    assert_eq!(Material::from_secret(Some(&data)), m);
    assert_eq!(Material::from_secret(None), Material::default());
    assert_eq!(not_after(&m.cert), Some(NOW + 90 * DAY));
}

#[test]
fn the_served_certificate_loads_into_rustls() {
    let (m, _, _) = written(NOW, &Material::default());
    let swap = crate::webhook::tls::SwapCert::default();
    assert!(!swap.is_set());
    swap.set(m.cert.as_bytes(), m.key.as_bytes()).unwrap();
    assert!(swap.is_set());
    let other = written(NOW, &Material::default()).0;
    assert!(
        swap.set(m.cert.as_bytes(), other.key.as_bytes()).is_err(),
        "a key that does not match is refused"
    );
}

#[test]
fn a_certificate_for_an_ip_address_is_kept_like_one_for_names() {
    let ips = vec!["127.0.0.1".to_string(), "::1".to_string()];
    let life = Lifetimes::default();
    let Step::Write { material, .. } = plan(NOW, &Material::default(), &ips, &life).unwrap().step
    else {
        panic!("a first write")
    };
    assert_eq!(certs(&material.cert)[0].dns_names, ips);
    assert_eq!(plan(NOW, &material, &ips, &life).unwrap().step, Step::Keep);
}

#[test]
fn merging_bundles_keeps_the_first_and_adds_the_other_unexpired_cas_once() {
    let (a, _, _) = written(NOW, &Material::default());
    let (b, _, _) = written(NOW, &Material::default());
    let both = merge_bundles(NOW, &a.ca_bundle, &b.ca_bundle);
    assert_eq!(both, format!("{}{}", a.ca_bundle, b.ca_bundle));
    assert_eq!(merge_bundles(NOW, &both, &b.ca_bundle), both, "no CA twice");
    let later = NOW + 6 * 365 * DAY;
    assert_eq!(
        merge_bundles(later, &a.ca_bundle, &b.ca_bundle),
        a.ca_bundle,
        "expired CAs are not added"
    );
    assert_eq!(merge_bundles(NOW, &a.ca_bundle, "junk"), a.ca_bundle);
}
