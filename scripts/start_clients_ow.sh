#!/usr/bin/env bash
# Start N clients (default 20) against the OpenWhisk action at BASE_URL_OW.
exec "$(dirname "$0")/clients.sh" start ow "${1:-20}"
