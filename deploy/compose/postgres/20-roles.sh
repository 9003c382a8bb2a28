#!/bin/sh
# Roles for the local stack, passwords read from the compose secrets (never from this file):
# - exportd_reader: SELECT only, the role exports read with, so a catalog query cannot write.
#   The tables do not exist yet: the sample-data service creates them later, as POSTGRES_USER,
#   and again on every run. Default privileges give the reader SELECT on each of them.
# - the database exportd_state for the API's state store (docker-compose.postgres-state.yml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader_password="$(cat /run/secrets/pg_reader_password)" <<'SQL'
CREATE ROLE exportd_reader LOGIN PASSWORD :'reader_password';
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO exportd_reader;
CREATE DATABASE exportd_state OWNER exportd;
SQL
