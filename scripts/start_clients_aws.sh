#!/usr/bin/env bash
# Start N clients (default 20) against the AWS function at BASE_URL_AWS.
exec "$(dirname "$0")/clients.sh" start aws "${1:-20}"
