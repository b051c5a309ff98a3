//! `drydock restore SNAPSHOT --registry-url URL --project NAME [--repository NAME[:TAG]]`:
//! one Harbor project, repository or tag pushed back into a running Harbor through its
//! registry API ("someone deleted project X"), without rolling its database back.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::json;

use super::restore::RestoreArgs;
use super::{Context, Output};
use crate::error::{exit, Error, Result};
use crate::harbor::db::names;
use crate::harbor::registry::project::{
    project_of, Inventory, RepoLinks, RepoPlan, Selection, Source,
};
use crate::harbor::registry::push::{Pusher, RepoReport};
use crate::harbor::registry::{self, Digest};
use crate::ids::{ByteSize, SnapshotId};
use crate::progress::Progress;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::Snapshot;
use crate::repo::writer::OnBytes as _;
use crate::repo::Repository;
use crate::term::esc;

/// What a push through the registry API does not bring back: it lives in Harbor's
/// database, which this restore leaves alone.
pub const NOT_RESTORED: &[&str] = &[
    "the project's settings (public/private, quota, CVE allowlist, auto-scan, tag immutability)",
    "its members",
    "its robot accounts",
    "labels",
    "tag retention rules",
    "webhooks",
];

pub async fn run(
    ctx: &Context,
    args: &RestoreArgs,
    repo: &Arc<Repository>,
    id: &SnapshotId,
    snap: &Snapshot,
    project: &str,
) -> Result<Output> {
    let sel = Selection::parse(project, args.repository.as_deref())?;
    let client = args
        .registry_api
        .client()?
        .expect("clap: --project requires --registry-url");
    let part =
        snap.parts.registry.as_ref().ok_or_else(|| {
            Error::Usage(format!("snapshot {} holds no registry part", id.short()))
        })?;
    let reader = BlobReader::new(repo.clone(), Arc::new(repo.load_index().await?), "restore")?;
    let inventory = Inventory::of(&registry::restore::links(&reader, part).await?);
    let chosen = inventory.select(&sel)?;
    let mut notes = cross_check(&reader, snap, &sel, &inventory).await?;
    notes.extend(
        inventory
            .refused
            .iter()
            .map(|r| format!("the snapshot's {} is not a valid OCI name: skipped", esc(r))),
    );
    let nodes = registry::restore::blob_nodes(&reader, part).await?;
    let source = Source {
        reader: &reader,
        nodes: nodes
            .into_iter()
            .map(|n| Digest::parse(&n.name).map(|d| (d, n)))
            .collect::<Result<_>>()?,
    };
    let plans = plan(&source, &chosen, sel.tag.as_deref(), &mut notes).await?;
    let target = crate::oci::shown(client.url()).to_string();
    let mut text = String::new();
    let reports = match args.dry_run {
        true => plans.iter().map(RepoReport::of).collect(),
        false => {
            let restoring: HashSet<String> = plans.iter().map(|p| p.name.clone()).collect();
            let progress = Progress::new(ctx.global.progress, "restore project", None);
            progress.total(plans.iter().map(RepoPlan::bytes).sum());
            let mut pusher = Pusher::new(
                &client,
                &source,
                inventory.holders(),
                restoring,
                args.parallel,
                progress.clone(),
            );
            pusher.force = args.force;
            let mut reports = Vec::with_capacity(plans.len());
            for p in &plans {
                reports.push(pusher.push(p).await?);
            }
            progress.finish();
            reports
        }
    };
    for r in &reports {
        text += &repo_line(r, args.dry_run);
    }
    text += &summary(&sel, &target, &reports, args.dry_run);
    let left: Vec<&String> = reports.iter().flat_map(|r| &r.tags_left).collect();
    for l in &left {
        text += &format!("tag {l}\n");
    }
    for n in &notes {
        text += &format!("note: {n}\n");
    }
    text += &format!(
        "not restored this way (they live in Harbor's database): {}\n",
        NOT_RESTORED.join(", ")
    );
    let mut out = Output::ok(
        text,
        json!({
            "snapshot": id.to_hex(), "project": sel.project, "repository": sel.repository,
            "tag": sel.tag, "registry": target, "dry_run": args.dry_run,
            "repositories": reports, "notes": notes, "not_restored": NOT_RESTORED,
        }),
    );
    if !left.is_empty() {
        out.exit = exit::PARTIAL;
    }
    Ok(out)
}

/// One plan per chosen repository; one with no manifests (only layer links left, as a
/// deletion before the snapshot leaves them) is noted and skipped.
async fn plan(
    source: &Source<'_>,
    chosen: &[(&str, &RepoLinks)],
    tag: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<RepoPlan>> {
    let mut plans = Vec::with_capacity(chosen.len());
    for (name, links) in chosen {
        let p = source.plan(name, links, tag).await?;
        match p.images.is_empty() {
            true => notes.push(format!(
                "{name} has no manifests in the snapshot (only layer links): nothing to push"
            )),
            false => plans.push(p),
        }
    }
    Ok(plans)
}

/// The repository names among `all` that `sel` chooses.
fn selected<'s>(all: impl Iterator<Item = &'s String>, sel: &Selection) -> BTreeSet<&'s str> {
    all.map(String::as_str)
        .filter(|r| project_of(r) == sel.project)
        .filter(|r| sel.repository.as_deref().is_none_or(|w| w == *r))
        .collect()
}

/// What Harbor's database in the snapshot says of the project, where it differs from the
/// registry part (which decides what is pushed: it holds the images).
async fn cross_check(
    reader: &BlobReader,
    snap: &Snapshot,
    sel: &Selection,
    inventory: &Inventory,
) -> Result<Vec<String>> {
    let Some(db) = snap.parts.databases.iter().find(|p| names::is_harbor(p)) else {
        return Ok(vec![
            "the snapshot has no Harbor database part: the project's repositories come from its registry part alone".into(),
        ]);
    };
    let names = names::read(reader, db)
        .await?
        .expect("checked: Harbor's database");
    let mut notes = Vec::new();
    if !names.projects.contains(&sel.project) {
        notes.push(format!(
            "Harbor's database in the snapshot has no project {}: its repositories come from the registry part alone",
            sel.project
        ));
    }
    let in_db = selected(names.repositories.iter(), sel);
    let in_registry = selected(inventory.repositories.keys(), sel);
    for r in in_db.difference(&in_registry) {
        notes.push(format!(
            "{} is in Harbor's database but has no images in the snapshot's registry part: nothing to push",
            esc(r)
        ));
    }
    for r in in_registry.difference(&in_db) {
        notes.push(format!(
            "{r} is in the registry part but not in Harbor's database of the snapshot (pushed around Harbor, or deleted from it): pushed all the same"
        ));
    }
    Ok(notes)
}

fn repo_line(r: &RepoReport, dry_run: bool) -> String {
    let what = format!(
        "{} tags, {} manifests, {} blobs ({})",
        r.tags,
        r.manifests,
        r.blobs,
        ByteSize(r.bytes)
    );
    if dry_run {
        return format!("would push {}: {what}\n", r.repository);
    }
    format!(
        "{}: {what}; pushed {} tags, {} manifests, {} blobs uploaded ({}), {} mounted\n",
        r.repository,
        r.tags_pushed,
        r.manifests_pushed,
        r.blobs_uploaded,
        ByteSize(r.bytes_uploaded),
        r.blobs_mounted
    )
}

fn summary(sel: &Selection, target: &str, reports: &[RepoReport], dry_run: bool) -> String {
    let what = match (&sel.repository, &sel.tag) {
        (Some(r), Some(t)) => format!("{r}:{t}"),
        (Some(r), None) => r.clone(),
        _ => format!("project {}", sel.project),
    };
    let sum = |f: fn(&RepoReport) -> usize| reports.iter().map(f).sum::<usize>();
    if dry_run {
        return format!(
            "would restore {what} into {target}: {} repositories, {} tags, {} manifests, {} blobs ({}); nothing was sent\n",
            reports.len(),
            sum(|r| r.tags),
            sum(|r| r.manifests),
            sum(|r| r.blobs),
            ByteSize(reports.iter().map(|r| r.bytes).sum())
        );
    }
    let pushed = sum(|r| r.tags_pushed + r.manifests_pushed + r.blobs_uploaded + r.blobs_mounted);
    if pushed == 0 {
        return format!(
            "restored {what} into {target}: the registry had everything already; nothing pushed\n"
        );
    }
    format!(
        "restored {what} into {target}: {} repositories; pushed {} tags, {} manifests, {} blobs ({} uploaded, {}; {} mounted)\n",
        reports.len(),
        sum(|r| r.tags_pushed),
        sum(|r| r.manifests_pushed),
        sum(|r| r.blobs_uploaded + r.blobs_mounted),
        sum(|r| r.blobs_uploaded),
        ByteSize(reports.iter().map(|r| r.bytes_uploaded).sum()),
        sum(|r| r.blobs_mounted),
    )
}
