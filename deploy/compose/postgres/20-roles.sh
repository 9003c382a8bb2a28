#!/bin/sh
# Roles for the local stack, passwords read from the compose secrets (never from this file):
# - exportd_reader: SELECT only, the role exports read with, so a catalog query cannot write;
# - the database exportd_state for the API's state store (docker-compose.postgres-state.yml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader_password="$(cat /run/secrets/pg_reader_password)" <<'SQL'
CREATE ROLE exportd_reader LOGIN PASSWORD :'reader_password';
GRANT SELECT ON ALL TABLES IN SCHEMA public TO exportd_reader;
CREATE DATABASE exportd_state OWNER exportd;
SQL
