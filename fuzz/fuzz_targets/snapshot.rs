//! Snapshot manifests (FORMAT.md §9): the JSON inside the encrypted `snapshots/` object.
#![no_main]

use drydock::repo::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = Snapshot::parse(data, "snapshot") else {
        return;
    };
    // What every command does with a loaded snapshot.
    let _ = snap.parts.names();
    let _ = snap.parts.root_trees();
    let _ = snap.parts.root_data();
    for db in &snap.parts.databases {
        let _ = db.load_order();
    }
    let bytes = serde_json::to_vec(&snap).expect("snapshots serialise");
    let again = Snapshot::parse(&bytes, "snapshot").expect("a serialised snapshot parses again");
    assert_eq!(
        serde_json::to_vec(&again).expect("snapshots serialise"),
        bytes,
        "the snapshot changes across a round trip"
    );
});
