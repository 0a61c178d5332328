//! Files recovery must not trust: segments copied, renamed or restored from elsewhere, grown
//! to gigabytes or full of junk, and a log cut shorter than its snapshot says.

use crate::common::{fresh, get, open_with, segment_paths};
use persistent_cache_guest::format;
use std::fs;
use std::path::Path;

/// 64 KiB limit: 8 KiB segments.
const LIMIT: u64 = 64 * 1024;

/// The files in `dir/damaged/`.
fn set_aside(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir.join(format::DAMAGED_DIR)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Truncates or extends the file at `path` to `len` bytes.
fn set_len(path: &Path, len: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len).unwrap();
}

#[test]
fn a_segment_copied_under_a_later_name_is_set_aside_and_never_a_source_of_old_values() {
    let (dir, clock, mut e) = fresh(LIMIT);
    for i in 0..30 {
        e.set(&format!("k{i}"), format!("old {i}").as_bytes(), None)
            .unwrap();
    }
    let first = segment_paths(dir.path()).remove(0);
    for i in 0..30 {
        if i % 3 == 0 {
            e.delete(&format!("k{i}")).unwrap();
        } else {
            e.set(&format!("k{i}"), format!("new {i}").as_bytes(), None)
                .unwrap();
        }
    }
    e.close().unwrap();
    let last = segment_paths(dir.path()).pop().unwrap();
    let later =
        format::parse_segment_file_name(last.file_name().unwrap().to_str().unwrap()).unwrap() + 1;
    fs::copy(&first, dir.path().join(format::segment_file_name(later))).unwrap();

    let mut e = open_with(dir.path(), &clock, LIMIT);
    assert_eq!(e.stats().damaged, 1);
    for i in 0..30 {
        let want = (i % 3 != 0).then(|| format!("new {i}").into_bytes());
        assert_eq!(get(&mut e, &format!("k{i}")), want, "k{i}");
    }
    assert_eq!(set_aside(dir.path()).len(), 1);
    assert!(set_aside(dir.path())[0].starts_with(&format::segment_file_name(later)));
}

#[test]
fn a_segment_from_another_cache_is_set_aside() {
    let (other_dir, _, mut other) = fresh(LIMIT);
    other.set("k", b"from the other cache", None).unwrap();
    other.close().unwrap();
    let (dir, clock, mut e) = fresh(LIMIT);
    e.set("k", b"mine", None).unwrap();
    e.close().unwrap();
    let foreign = segment_paths(other_dir.path()).remove(0);
    fs::copy(&foreign, dir.path().join(format::segment_file_name(2))).unwrap();
    let mut e = open_with(dir.path(), &clock, LIMIT);
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"mine"[..]));
    assert_eq!(e.stats().damaged, 1);
}

#[test]
fn a_newest_segment_grown_to_gigabytes_is_cut_back_and_its_bytes_kept_aside() {
    let (dir, clock, mut e) = fresh(LIMIT);
    for i in 0..20 {
        e.set(&format!("k{i}"), &[i as u8; 500], None).unwrap();
    }
    e.close().unwrap();
    let last = segment_paths(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // `truncate -s 2G`: a sparse tail of zeros, more than a tail worth scanning.
    set_len(&last, 2 << 30);
    let mut e = open_with(dir.path(), &clock, LIMIT);
    for i in 0..20 {
        assert_eq!(
            get(&mut e, &format!("k{i}")),
            Some(vec![i as u8; 500]),
            "k{i}"
        );
    }
    assert_eq!(fs::metadata(&last).unwrap().len(), len, "cut back");
    assert_eq!(e.stats().damaged, 1);
    assert_eq!(set_aside(dir.path()).len(), 1, "the grown tail kept aside");
    e.set("more", b"x", None).unwrap();
    e.close().unwrap();
    let mut e = open_with(dir.path(), &clock, LIMIT);
    assert_eq!(get(&mut e, "more").as_deref(), Some(&b"x"[..]));
    assert_eq!(e.stats().damaged, 0);
}

#[test]
fn segments_too_big_to_address_or_full_of_junk_are_set_aside_unread() {
    let (dir, clock, mut e) = fresh(LIMIT);
    e.set("k", b"v", None).unwrap();
    e.close().unwrap();
    // 5 GiB (sparse): past what a u32 record offset can address.
    let huge = dir.path().join(format::segment_file_name(7));
    fs::File::create(&huge).unwrap().set_len(5 << 30).unwrap();
    // Junk under a segment's name: no header.
    fs::write(
        dir.path().join(format::segment_file_name(8)),
        vec![0xA5u8; 4 << 20],
    )
    .unwrap();
    let mut e = open_with(dir.path(), &clock, LIMIT);
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(e.stats().damaged, 2);
    assert_eq!(set_aside(dir.path()).len(), 2);
    e.set("after", b"y", None).unwrap();
    e.close().unwrap();
    let mut e = open_with(dir.path(), &clock, LIMIT);
    assert_eq!(get(&mut e, "after").as_deref(), Some(&b"y"[..]));
    assert_eq!(e.stats().damaged, 0, "set aside once");
}

#[test]
fn a_log_cut_shorter_than_its_snapshot_says_loses_only_the_cut_records() {
    let (dir, clock, mut e) = fresh(1 << 30);
    for i in 0..673 {
        e.set(&format!("k{i}"), format!("value {i}").as_bytes(), None)
            .unwrap();
    }
    e.close().unwrap();
    let last = segment_paths(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    set_len(&last, len - 1);
    let mut e = open_with(dir.path(), &clock, 1 << 30);
    for i in 0..672 {
        assert_eq!(
            get(&mut e, &format!("k{i}")),
            Some(format!("value {i}").into_bytes()),
            "k{i}"
        );
    }
    assert_eq!(get(&mut e, "k672"), None, "the cut record");
}

#[test]
fn a_file_named_damaged_does_not_stop_open_and_the_foreign_segment_stays_ignored() {
    let (dir, clock, mut e) = fresh(LIMIT);
    e.set("k", b"v", None).unwrap();
    e.close().unwrap();
    fs::write(dir.path().join(format::DAMAGED_DIR), b"in the way").unwrap();
    let junk = dir.path().join(format::segment_file_name(8));
    fs::write(&junk, vec![0xA5u8; 4096]).unwrap();
    for _ in 0..2 {
        let mut e = open_with(dir.path(), &clock, LIMIT);
        assert_eq!(get(&mut e, "k").as_deref(), Some(&b"v"[..]));
        assert_eq!(e.stats().damaged, 1, "counted at every open");
        e.close().unwrap();
        assert!(junk.exists(), "left where it is, never read");
    }
    // Enough writes to roll through segment ids 2..8: the junk's id is never reused.
    let mut e = open_with(dir.path(), &clock, LIMIT);
    for i in 0..100 {
        e.set(&format!("fill{i}"), &[1u8; 700], None).unwrap();
    }
    e.close().unwrap();
    assert_eq!(fs::read(&junk).unwrap(), vec![0xA5u8; 4096]);
}
