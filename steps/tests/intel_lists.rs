//! Local IP lists: netset parsing (comments, IPv4, IPv6, CIDR, ranges), bad lines reported
//! with their line numbers, the demo lists, and lookups in a large list.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use steps::intel::lists::{IpSet, ListError, LocalList};
use steps::intel::{Provider, Verdict};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse(text: &str) -> IpSet {
    IpSet::parse(text).unwrap_or_else(|errs| panic!("{errs:?}"))
}

fn demo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks/data/intel")
        .join(name)
}

#[test]
fn comments_blank_lines_v4_v6_cidr_and_ranges() {
    let set = parse(
        "# FireHOL-style header\n\
         #\n\
         \n\
         198.51.100.66\n\
         203.0.113.0/24   # inline comment\n\
         \t 192.0.2.128/25 \n\
         2001:db8:bad::/48\n\
         2001:db8::7\n\
         10.9.0.10-10.9.0.20 ; Spamhaus-style comment\n\
         \r\n",
    );
    for (addr, listed) in [
        ("198.51.100.66", true),
        ("198.51.100.65", false),
        ("198.51.100.67", false),
        ("203.0.113.0", true),
        ("203.0.113.255", true),
        ("203.0.114.0", false),
        ("192.0.2.127", false),
        ("192.0.2.128", true),
        ("2001:db8:bad::1", true),
        ("2001:db8:bad:ffff:ffff:ffff:ffff:ffff", true),
        ("2001:db8:bae::", false),
        ("2001:db8::7", true),
        ("2001:db8::8", false),
        ("10.9.0.9", false),
        ("10.9.0.10", true),
        ("10.9.0.20", true),
        ("10.9.0.21", false),
        ("::ffff:203.0.113.9", true),
    ] {
        assert_eq!(set.contains(ip(addr)), listed, "{addr}");
    }
}

#[test]
fn every_bad_line_is_reported_with_its_number() {
    let errs = IpSet::parse(
        "# header\n\
         1.2.3.4\n\
         not-an-ip\n\
         10.0.0.0/33\n\
         \n\
         2001:db8::/129\n\
         10.0.0.0/abc\n\
         10.0.0.9-10.0.0.1\n\
         10.0.0.1-2001:db8::1\n\
         300.1.2.3\n",
    )
    .err()
    .unwrap_or_default();
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 6, 7, 8, 9, 10]);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "line 3: not an IP address, network or range (`not-an-ip`)",
            "line 4: prefix length 33 is longer than 32 (`10.0.0.0/33`)",
            "line 6: prefix length 129 is longer than 128 (`2001:db8::/129`)",
            "line 7: bad prefix length `abc` (`10.0.0.0/abc`)",
            "line 8: range ends before it starts (`10.0.0.9-10.0.0.1`)",
            "line 9: range mixes IPv4 and IPv6 (`10.0.0.1-2001:db8::1`)",
            "line 10: not an IP address, network or range (`300.1.2.3`)",
        ]
    );
}

#[test]
fn a_file_with_bad_lines_names_the_file_and_lines() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bad.netset");
    std::fs::write(&path, "1.2.3.4\nfoo\n5.6.7.8\nbar\n").unwrap_or_else(|e| panic!("{e}"));
    let e = LocalList::load("bad", Verdict::Malicious, &path)
        .err()
        .unwrap_or_else(|| panic!("bad lines must fail the load"));
    let msg = e.to_string();
    assert!(matches!(e, ListError::Lines { ref errors, .. } if errors.len() == 2));
    assert!(
        msg.contains("bad.netset") && msg.contains("2 bad line(s)"),
        "{msg}"
    );
    assert!(msg.contains("line 2:") && msg.contains("line 4:"), "{msg}");

    let missing = LocalList::load("x", Verdict::Benign, &dir.path().join("missing.netset"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(missing.starts_with("cannot read `"), "{missing}");
}

#[test]
fn many_bad_lines_are_summarised() {
    let text = "x\n".repeat(12);
    let errs = IpSet::parse(&text).err().unwrap_or_default();
    assert_eq!(errs.len(), 12);
    let e = ListError::Lines {
        path: "big.netset".into(),
        errors: errs,
    };
    assert!(e.to_string().ends_with("and 7 more"), "{e}");
}

#[tokio::test]
async fn demo_lists_load_and_say_what_they_stand_for() {
    let block = LocalList::load(
        "demo-blocklist",
        Verdict::Malicious,
        &demo("blocklist.netset"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let allow = LocalList::load("demo-allowlist", Verdict::Benign, &demo("allowlist.netset"))
        .unwrap_or_else(|e| panic!("{e}"));
    let check = |l: &LocalList, a: &str| {
        let l = l.clone();
        let a = ip(a);
        async move { l.check(a).await.unwrap_or_else(|e| panic!("{e}")).verdict }
    };
    assert_eq!(check(&block, "203.0.113.7").await, Verdict::Malicious);
    assert_eq!(check(&block, "198.51.100.66").await, Verdict::Malicious);
    assert_eq!(check(&block, "198.51.100.67").await, Verdict::Unknown);
    assert_eq!(check(&block, "8.8.8.8").await, Verdict::Unknown);
    assert_eq!(check(&allow, "192.0.2.10").await, Verdict::Benign);
    assert_eq!(check(&allow, "203.0.113.7").await, Verdict::Unknown);
    assert_eq!(block.name(), "demo-blocklist");
}

/// A list the size of a large public feed (every other /24 of 10.0.0.0/8 plus single
/// addresses) parses into ranges that lookups search by bisection.
#[test]
fn large_lists_are_merged_and_searched() {
    let mut text = String::new();
    for i in 0..65_536u32 {
        if i % 2 == 0 {
            let net = Ipv4Addr::from((10u32 << 24) | (i << 8));
            text.push_str(&format!("{net}/24\n"));
        }
    }
    for i in 0..50_000u32 {
        let a = Ipv4Addr::from((100u32 << 24) | (i * 4));
        text.push_str(&format!("{a}\n"));
    }
    let set = parse(&text);
    assert_eq!(set.ranges(), 32_768 + 50_000);
    assert!(set.contains(ip("10.0.0.1")));
    assert!(!set.contains(ip("10.0.1.1")));
    assert!(set.contains(ip("10.255.254.200")));
    assert!(!set.contains(ip("10.255.255.200")));
    assert!(set.contains(ip("100.0.0.4")));
    assert!(!set.contains(ip("100.0.0.5")));
}
