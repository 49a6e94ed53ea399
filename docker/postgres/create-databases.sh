#!/bin/sh
# Runs once, when the postgres container starts on an empty data volume (the image runs
# every script in /docker-entrypoint-initdb.d). Creates each database named in
# SHOPKATA_DATABASES (space-separated), owned by POSTGRES_USER: one per service of the
# services topology, one for the monolith, one for the kata's gateway-monolith step.
# The names follow launcher/databases.py (shopkata_<topology>_<service>), as with
# `make up-services DATABASE=postgres`; tests/containers checks that they match.
set -eu
for name in ${SHOPKATA_DATABASES:-}; do
    echo "creating database $name"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE \"$name\" OWNER \"$POSTGRES_USER\""
done
