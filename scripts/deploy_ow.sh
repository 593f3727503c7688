#!/usr/bin/env bash
# Deploy the function to Apache OpenWhisk as a web action, with API routes and a
# schedule that closes rounds nobody pokes. Needs `wsk` configured for your host.
#
#   MONGODB_URL=mongodb://... FL_ADMIN_TOKEN=... scripts/deploy_ow.sh
#
# Settings: FL_OW_ACTION (serverless-fl), FL_OW_IMAGE (a runtime image built from
# server_ow/Dockerfile; default: the stock python:3.11 kind with the
# dependencies zipped in by flcli/package.py), FL_OW_API (create API-gateway routes: 1), FL_OW_SCHEDULE
# (alarm cron, default every minute).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MONGODB_URL:?set MONGODB_URL to a MongoDB the OpenWhisk action can reach}"
: "${FL_ADMIN_TOKEN:?set FL_ADMIN_TOKEN: a public web action without an operator token lets anyone create jobs}"
action=${FL_OW_ACTION:-serverless-fl}
build=build/ow

# The action package: __main__.py + the core (which imports no torch), and for the
# stock runtime its dependencies, built for the runtime's Linux, trimmed and precompiled.
deps=()
[ -n "${FL_OW_IMAGE:-}" ] && deps=(--no-deps)  # the image has them
"${PYTHON:-python3}" -m flcli.package ow "${deps[@]}"

kind=(--kind python:3.11)
[ -n "${FL_OW_IMAGE:-}" ] && kind=(--docker "$FL_OW_IMAGE")
# Settings go in a parameter file as JSON strings: `-p FL_ADMIN_TOKEN 20251123` would bind
# the number 20251123, since wsk parses -p values as JSON.
umask 077
python3 -c 'import json, os, sys; json.dump({k: os.environ.get(k, d) for k, d in
  [("MONGODB_URL", ""), ("FL_DB_NAME", "fl"), ("FL_ADMIN_TOKEN", ""), ("FL_ENROL_TOKEN", "")]}, sys.stdout)' \
  > "$build/params.json"
wsk action update "$action" "$build/action.zip" "${kind[@]}" --web true --web-secure false \
  -a final true --param-file "$build/params.json" --timeout 60000 --memory 512
rm -f "$build/params.json"

# API gateway routes, one per action of the route table (clients may also use the web action URL directly).
if [ "${FL_OW_API:-1}" = 1 ]; then
  for a in $(python3 -m flcore.edge.routes --names); do
    wsk api create /fl "/$a" post "$action" --response-type http >/dev/null
  done
  for p in dashboard dashboard/app.js dashboard/app.css; do  # the dashboard, served by the action on GET
    wsk api create /fl "/$p" get "$action" --response-type http >/dev/null
  done
fi

# Close rounds nobody pokes: an alarm trigger and a rule that invokes the action.
wsk trigger update fl-tick --feed /whisk.system/alarms/alarm \
  -p cron "${FL_OW_SCHEDULE:-* * * * *}" -p trigger_payload '{"fl_tick": true}' >/dev/null 2>&1 \
  || wsk trigger create fl-tick --feed /whisk.system/alarms/alarm \
       -p cron "${FL_OW_SCHEDULE:-* * * * *}" -p trigger_payload '{"fl_tick": true}'
wsk rule update fl-tick-rule fl-tick "$action" >/dev/null 2>&1 || wsk rule create fl-tick-rule fl-tick "$action"

web_url=$(wsk action get "$action" --url | tail -n 1)
echo "BASE_URL_OW=$web_url"
[ "${FL_OW_API:-1}" = 1 ] && echo "API routes: $(wsk api list /fl | awk '/\/fl\/poll/ {print $NF}' | sed 's#/poll$##')"
