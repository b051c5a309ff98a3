#!/bin/bash
# Find the Velero backup that drydock's snapshot goes with: the newest Backup object of
# the Schedule $VELERO_SCHEDULE in $VELERO_NAMESPACE created less than
# $VELERO_BACKUP_MAX_AGE seconds ago. Writes its name to /velero/backup-name, or nothing.
# Never fails the pod: without a name the backup still runs, untagged, and its --ttl
# still bounds its life.
set -uo pipefail
out=/velero/backup-name
: >"$out"

if ! list=$(kubectl get backups.velero.io --namespace "$VELERO_NAMESPACE" \
        --selector "velero.io/schedule-name=$VELERO_SCHEDULE" --output json); then
    echo "warning: cannot list the Velero backups of schedule $VELERO_SCHEDULE in namespace $VELERO_NAMESPACE; the snapshot is not tagged" >&2
    exit 0
fi

name=$(jq -r --argjson max "$VELERO_BACKUP_MAX_AGE" '
    [.items[]
     | select(now - (.metadata.creationTimestamp | fromdateiso8601) < $max)]
    | sort_by(.metadata.creationTimestamp) | last | .metadata.name // empty' <<<"$list") || name=

if [ -z "$name" ]; then
    echo "warning: no backup of Velero schedule $VELERO_SCHEDULE in the last $VELERO_BACKUP_MAX_AGE s; the snapshot is not tagged" >&2
    exit 0
fi
printf '%s\n' "$name" >"$out"
echo "the snapshot goes with Velero backup $name" >&2
