#!/bin/sh
# Registers the disks given in the deployment's `disks` parameter through the app's own API
# (POST /api/disks), so the app checks each one exactly as it checks a disk added later.
# Run by azd after deploy; by hand: DISK_REGISTRATIONS='[...]' AZURE_RESOURCE_GROUP=rg \
# FUNCTION_APP_NAME=app infra/scripts/register-disks.sh. Needs az, curl and jq.
# The function key is held in a shell variable only: never printed, never stored.
set -eu
if [ -z "${DISK_REGISTRATIONS:-}" ] || [ "$DISK_REGISTRATIONS" = "[]" ]; then
  echo "diskdelta: no disks in the deployment parameters; register them later with POST /api/disks"
  exit 0
fi
: "${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set}"
: "${FUNCTION_APP_NAME:?FUNCTION_APP_NAME is not set}"
host=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$FUNCTION_APP_NAME" --query defaultHostName -o tsv)
key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$FUNCTION_APP_NAME" --query functionKeys.default -o tsv)
answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
printf '%s' "$DISK_REGISTRATIONS" | jq -c '.[]' | while read -r disk; do
  id=$(printf '%s' "$disk" | jq -r .id)
  status=$(curl -sS -o "$answer" -w '%{http_code}' -X POST "https://$host/api/disks" \
    -H "x-functions-key: $key" -H 'content-type: application/json' --data "$disk")
  case "$status" in
    200 | 201) echo "diskdelta: registered $id" ;;
    409) echo "diskdelta: $id is already registered" ;;
    *)
      echo "diskdelta: registering $id failed with HTTP $status:" >&2
      cat "$answer" >&2
      exit 1
      ;;
  esac
done
