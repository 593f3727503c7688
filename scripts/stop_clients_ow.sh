#!/usr/bin/env bash
# Stop exactly the clients scripts/start_clients_ow.sh started.
exec "$(dirname "$0")/clients.sh" stop ow
