//! The registry part's link list (FORMAT.md §9): `path\tdigest\n` lines in data blobs.
#![no_main]

use drydock::harbor::registry::{count, format_links, parse_links};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(links) = parse_links(data) else {
        return;
    };
    let _ = count(&links);
    for l in &links {
        let _ = (l.key(), l.tag(), l.repository());
    }
    let again = parse_links(&format_links(&links)).expect("a formatted link list parses again");
    assert_eq!(again, links, "the link list changes across a round trip");
});
