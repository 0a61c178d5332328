//! Paging through keys by prefix.

use crate::common::{fresh, NO_LIMIT};

#[test]
fn keys_are_listed_by_prefix_in_pages_without_expired_ones() {
    let (_dir, clock, mut e) = fresh(NO_LIMIT);
    for i in (0..250).rev() {
        e.set(&format!("user:{i:03}"), b"u", None).unwrap();
    }
    e.set("file:a", b"f", None).unwrap();
    e.set("user:ttl", b"t", Some(10)).unwrap();
    assert_eq!(e.keys("file:", None, 10), vec!["file:a".to_string()]);
    assert_eq!(e.keys("user:ttl", None, 10).len(), 1);
    clock.advance(10);
    assert!(e.keys("user:ttl", None, 10).is_empty());
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = e.keys("user:", after.as_deref(), 100);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        all.extend(page);
    }
    let want: Vec<String> = (0..250).map(|i| format!("user:{i:03}")).collect();
    assert_eq!(all, want);
    assert_eq!(e.keys("", None, 0), Vec::<String>::new());
    assert_eq!(e.keys("", None, 1000).len(), 251);
}

#[test]
fn paging_through_keys_while_they_change_lists_each_surviving_key_once() {
    let (_dir, _clock, mut e) = fresh(NO_LIMIT);
    for i in 0..1000 {
        e.set(&format!("k:{i:04}"), b"v", None).unwrap();
    }
    e.set("other", b"v", None).unwrap();
    let mut listed: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    let mut deleted_unlisted = Vec::new();
    loop {
        let page = e.keys("k:", after.as_deref(), 64);
        if page.is_empty() {
            break;
        }
        pages += 1;
        after = page.last().cloned();
        listed.extend(page);
        // Between pages: delete keys not listed yet, overwrite some, add new ones.
        let doomed = format!("k:{:04}", 999 - pages);
        if !listed.contains(&doomed) {
            deleted_unlisted.push(doomed.clone());
        }
        e.delete(&doomed).unwrap();
        e.set(&format!("k:{:04}", 500 + pages), b"w", None).unwrap();
        e.set(&format!("k:new{pages}"), b"n", None).unwrap();
    }
    assert!(deleted_unlisted.len() > 5);
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(listed, sorted, "sorted, each key once");
    for i in 0..1000 {
        let key = format!("k:{i:04}");
        let deleted = deleted_unlisted.contains(&key);
        assert_eq!(listed.contains(&key), !deleted, "{key}");
    }
    assert!(!listed.iter().any(|k| k == "other"));
    // A fresh listing sees the keys added meanwhile, and a restarted cursor works.
    let all = e.keys("k:", None, 10_000);
    assert!(all.iter().any(|k| k == "k:new1"));
    let from_start = e.keys("k:", Some("k:"), 3);
    assert_eq!(from_start, all[..3]);
    let later = e.keys("k:", Some(&all[100]), 2);
    assert_eq!(later, all[101..103]);
    let earlier = e.keys("k:", Some(&all[10]), 2);
    assert_eq!(earlier, all[11..13]);
}
