//! Tree blobs (FORMAT.md §8): one directory's entries as JSON.
#![no_main]

use drydock::repo::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::parse(data) else {
        return;
    };
    let _ = tree.referenced_blobs().count();
    let again = Tree::parse(&tree.to_bytes()).expect("a serialised tree parses again");
    assert_eq!(again, tree, "the tree changes across a round trip");
});
